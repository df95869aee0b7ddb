package alerts

import (
	"context"
	"errors"
	"fmt"
	"github.com/megawatch/megawatch/internal/telemetry"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// input reads the aggregator's input (node reports, or hall rollups for a
// site aggregator) from its JetStream stream through an ordered consumer,
// at the aggregator's own pace: a slow or paused aggregator is delayed,
// never fed less. The consumer pulls in bounded batches (memory stays
// bounded; the backlog waits in the stream) and needs no acks.
//
// It also keeps the event-time watermark that decides when a window may be
// aggregated: the stream timestamp of the last message handled. Because the
// stream is read in order, once a message stored after a window's deadline
// (end + grace) is handled, every report stored before the deadline has
// been handled too; a report is late only when the stream itself received
// it after the deadline.
type input struct {
	js     jetstream.JetStream
	stream string
	filter string
	// filters, when set, replace filter (several subject filters).
	filters []string
	handle  func(subject string, data []byte, msgID string)
	// before, when set, is called with each message's stream timestamp
	// before it is handled (the clock ticks the windows it closes).
	before func(tsNs int64)
	batch  int

	mu      sync.Mutex
	cons    jetstream.Consumer
	cc      jetstream.ConsumeContext
	handled atomic.Uint64 // stream sequence of the last message handled
	wmNs    atomic.Int64  // stream timestamp of the last message handled (unix ns)
	msgs    atomic.Uint64 // messages handled
	backlog atomic.Int64  // messages not yet delivered, at the last caughtUp
	wake    chan struct{} // signalled after each handled message when a waiter wants it
	waiting atomic.Bool
}

func newInput(js jetstream.JetStream, stream, filter string, batch int, handle func(subject string, data []byte, msgID string)) *input {
	if batch <= 0 {
		batch = 8192
	}
	return &input{js: js, stream: stream, filter: filter, handle: handle, batch: batch, wake: make(chan struct{}, 1)}
}

// start reads from the messages stored at or after from.
func (in *input) start(ctx context.Context, from time.Time) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	cons, err := in.js.OrderedConsumer(ctx, in.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: in.subjects(), DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("consumer on %s (%s): %w", in.stream, strings.Join(in.subjects(), ", "), err)
	}
	cc, err := cons.Consume(in.onMsg, jetstream.PullMaxMessages(in.batch), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return fmt.Errorf("consume %s (%s): %w", in.stream, strings.Join(in.subjects(), ", "), err)
	}
	in.cons, in.cc = cons, cc
	return nil
}

func (in *input) onMsg(m jetstream.Msg) {
	sseq, ts, ok := ackInfo(m.Reply())
	if !ok {
		if md, err := m.Metadata(); err == nil {
			sseq, ts, ok = md.Sequence.Stream, md.Timestamp.UnixNano(), true
		}
	}
	if ok && in.before != nil {
		in.before(ts)
	}
	in.handle(m.Subject(), m.Data(), msgID(m))
	if ok {
		in.handled.Store(sseq)
		if ts > in.wmNs.Load() {
			in.wmNs.Store(ts)
		}
	}
	in.msgs.Add(1)
	if in.waiting.Load() {
		select {
		case in.wake <- struct{}{}:
		default:
		}
	}
}

func (in *input) subjects() []string {
	if len(in.filters) > 0 {
		return in.filters
	}
	return []string{in.filter}
}

// stop ends the consumer.
func (in *input) stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cc != nil {
		in.cc.Stop()
		in.cc = nil
	}
}

// watermark is the stream time up to which every stored message was handled.
func (in *input) watermark() time.Time { return time.Unix(0, in.wmNs.Load()) }

// caughtUp asks the server whether every message stored so far was handled:
// nothing pending for the consumer and the last delivered one handled. It
// returns the time of the question (messages stored before it are handled).
func (in *input) caughtUp(ctx context.Context) (bool, time.Time, error) {
	in.mu.Lock()
	cons := in.cons
	in.mu.Unlock()
	if cons == nil {
		return false, time.Time{}, errors.New("input not started")
	}
	asked := time.Now()
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := cons.Info(ictx)
	if err != nil {
		return false, time.Time{}, err
	}
	in.backlog.Store(int64(info.NumPending))
	return info.NumPending == 0 && in.handled.Load() >= info.Delivered.Stream, asked, nil
}

// waitHandled blocks until a message is handled, d passes or ctx ends.
func (in *input) waitHandled(ctx context.Context, d time.Duration) {
	in.waiting.Store(true)
	defer in.waiting.Store(false)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-in.wake:
	case <-t.C:
	}
}

// ackInfo parses the stream sequence and timestamp from a JetStream reply
// subject without allocating: $JS.ACK.<stream>.<consumer>.<delivered>.
// <sseq>.<cseq>.<ts>.<pending> (9 tokens) or, with domain and account
// hash, $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.
// <cseq>.<ts>.<pending>[.<token>] (11 or 12 tokens).
func ackInfo(reply string) (sseq uint64, tsNs int64, ok bool) {
	if !strings.HasPrefix(reply, "$JS.ACK.") {
		return 0, 0, false
	}
	var tok [12]string
	n, start := 0, 0
	for i := 0; i <= len(reply); i++ {
		if i == len(reply) || reply[i] == '.' {
			if n == len(tok) {
				return 0, 0, false // more tokens than any known form
			}
			tok[n], n, start = reply[start:i], n+1, i+1
		}
	}
	off := 0
	switch n {
	case 9:
		off = 5
	case 11, 12:
		off = 7
	default:
		return 0, 0, false
	}
	sq, err1 := strconv.ParseUint(tok[off], 10, 64)
	ts, err2 := strconv.ParseInt(tok[off+2], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return sq, ts, true
}

// msgID is the message's Nats-Msg-Id ("" without one).
func msgID(m jetstream.Msg) string {
	if h := m.Headers(); h != nil {
		return h.Get(telemetry.HeaderMsgID)
	}
	return ""
}
