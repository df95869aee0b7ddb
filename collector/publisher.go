package collector

import (
	"context"
	"log/slog"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	pollInterval = 50 * time.Millisecond
	backoffMin   = 100 * time.Millisecond
	backoffMax   = 5 * time.Second
	logEvery     = 10 * time.Second
)

// publisher sends the queue's entries in order with JetStream async
// publish, at most maxPending awaiting an ack. Acks are taken in order: the
// oldest in-flight entry is committed when acked; when it fails, every
// in-flight entry is sent again (JetStream's Nats-Msg-Id dedup drops those
// that did arrive). While NATS is away, entries wait in the queue.
type publisher struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	q          *queue
	inflight   []flight
	maxPending int

	backoff time.Duration
	retryAt time.Time

	m       *metrics
	logger  *slog.Logger
	dropLog rateLog
	errLog  rateLog
	dupLog  rateLog
}

type flight struct {
	fut    jetstream.PubAckFuture
	at     time.Time
	replay bool
	tried  bool // the entry had been published before this attempt
}

// rateLog logs at most once per logEvery and counts what it held back.
type rateLog struct {
	last time.Time
	held int
}

func (r *rateLog) ok(now time.Time) (bool, int) {
	if now.Sub(r.last) < logEvery {
		r.held++
		return false, 0
	}
	held := r.held
	r.last, r.held = now, 0
	return true, held
}

func newPublisher(nc *nats.Conn, js jetstream.JetStream, q *queue, maxPending int, m *metrics, logger *slog.Logger) *publisher {
	return &publisher{nc: nc, js: js, q: q, maxPending: maxPending, m: m, logger: logger}
}

// run publishes until ctx ends, then keeps going for up to flush to empty
// the queue. Entries still queued then stay on disk (buffer_dir) or are
// lost (memory buffer); both are logged.
func (p *publisher) run(ctx context.Context, in <-chan entry, flush time.Duration) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	done := ctx.Done()
	var deadline <-chan time.Time
	for {
		p.pump()
		p.m.buffered.Set(float64(p.q.len()))
		if deadline != nil && p.q.len() == 0 {
			return
		}
		var okc <-chan *jetstream.PubAck
		var errc <-chan error
		if len(p.inflight) > 0 {
			okc, errc = p.inflight[0].fut.Ok(), p.inflight[0].fut.Err()
		}
		select {
		case e := <-in:
			p.add(e)
		case a := <-okc:
			p.acked(a)
		case err := <-errc:
			p.failed(err)
		case <-tick.C:
		case <-done:
			done = nil
			t := time.NewTimer(flush)
			defer t.Stop()
			deadline = t.C
			for drained := false; !drained; {
				select {
				case e := <-in:
					p.add(e)
				default:
					drained = true
				}
			}
		case <-deadline:
			if n := p.q.len(); n > 0 {
				if p.q.disk != nil {
					p.logger.Info("reports left in the disk buffer for the next start", "reports", n)
				} else {
					p.logger.Warn("reports not delivered before shutdown", "reports", n)
				}
			}
			return
		}
	}
}

// add queues a new report. It goes out live only when nothing is waiting
// before it and NATS is up; otherwise it is flagged replayed.
func (p *publisher) add(e entry) {
	now := time.Now()
	if p.q.unsent() > 0 || !p.nc.IsConnected() || now.Before(p.retryAt) {
		e.markReplayed()
	}
	dropped, err := p.q.push(e)
	if err != nil {
		if ok, held := p.errLog.ok(now); ok {
			p.logger.Error("buffer write failed", "err", err, "suppressed", held)
		}
	}
	p.dropped(dropped)
}

func (p *publisher) dropped(n int) {
	if n == 0 {
		return
	}
	p.m.dropped.Add(float64(n))
	if ok, held := p.dropLog.ok(time.Now()); ok {
		p.logger.Warn("buffer full: dropped the oldest reports", "dropped", n+held, "buffered", p.q.len())
	}
}

// pump sends waiting entries while NATS is up and the in-flight window has room.
func (p *publisher) pump() {
	if time.Now().Before(p.retryAt) || !p.nc.IsConnected() {
		return
	}
	for len(p.inflight) < p.maxPending {
		e, ok := p.q.next()
		if !ok {
			return
		}
		msg := &nats.Msg{Subject: e.subject, Data: e.data, Header: nats.Header{
			telemetry.HeaderMsgID:  []string{e.msgID},
			telemetry.HeaderSchema: []string{telemetry.SchemaVersion},
		}}
		fut, err := p.js.PublishMsgAsync(msg)
		if err != nil {
			p.q.unsend()
			p.q.markWaiting()
			p.stall(err)
			return
		}
		p.inflight = append(p.inflight, flight{fut: fut, at: time.Now(), replay: e.replay, tried: e.tried})
	}
}

func (p *publisher) acked(a *jetstream.PubAck) {
	f := p.inflight[0]
	p.inflight[0] = flight{}
	p.inflight = p.inflight[1:]
	if a != nil && a.Duplicate {
		if p.duplicate(f) {
			return
		}
	}
	p.q.commit()
	p.m.publishLat.Observe(time.Since(f.at).Seconds())
	p.m.published.Inc()
	if f.replay {
		p.m.replayed.Inc()
	}
	p.backoff = 0
	p.dropped(p.q.trim())
}

// failed handles the oldest in-flight entry's failure: everything in
// flight goes back to waiting, in order.
func (p *publisher) failed(err error) {
	clear(p.inflight)
	p.inflight = p.inflight[:0]
	p.q.rewind()
	p.stall(err)
	p.dropped(p.q.trim())
}

func (p *publisher) stall(err error) {
	p.m.publishErr.Inc()
	p.backoff = min(max(p.backoff*2, backoffMin), backoffMax)
	now := time.Now()
	p.retryAt = now.Add(p.backoff)
	if ok, held := p.errLog.ok(now); ok {
		p.logger.Warn("publish failed, buffering", "err", err, "buffered", p.q.len(), "retry_in", p.backoff, "suppressed", held)
	}
}
