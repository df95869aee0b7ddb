package ingest

import (
	"bytes"
	"context"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// worker is one fetch → decode → check → encode → batch → write → ack loop.
type worker struct {
	in      *Ingester
	cons    jetstream.Consumer
	stream  string
	budget  int // message bytes this worker may hold (prefetch + batches)
	batches []*batch
	reports *reportDecoder
	meters  *meterDecoder
	rollup  telemetry.Rollup
	alert   telemetry.AlertEvent
	unmarsh proto.UnmarshalOptions
	counted prometheus.Counter
	// Each target has two batches: one filling here while the other is
	// written by the worker's writer goroutine, so encoding overlaps the
	// HTTP round trip.
	free    []chan *batch
	writeCh chan *batch
	marks   []int
}

// writer writes, acks and splits the batches of one worker.
type writer struct {
	w     *worker
	gz    *gzip.Writer
	gzBuf bytes.Buffer
	lost  []lost // per message of the batch being written
	// body and bodyMsg: a lane's lines less remembered conflicts', and
	// each line's message index.
	body    []byte
	bodyMsg []int
}

// batch holds one target's encoded lines and the messages they came from.
// Each lane (a bucket / retention policy) has its own encoder: one write
// request per non-empty lane.
type batch struct {
	idx      int // target index
	t        *target
	encs     []*lpEncoder // per lane
	laneOf   [len(measurementNames)]int
	msgs     []jetstream.Msg
	ends     [][]int // ends[l][i]: end offset in lane l's buffer of msgs[i]'s lines
	lines    []int   // lines of msgs[i]
	nlines   int
	msgBytes int
	started  time.Time
}

func newBatch(idx int, t *target, levels []string) *batch {
	b := &batch{idx: idx, t: t, laneOf: t.laneOf()}
	for range t.Lanes() {
		b.encs = append(b.encs, newLPEncoder(levels))
		b.ends = append(b.ends, nil)
	}
	return b
}

// enc is the encoder of measurement m's lane.
func (b *batch) enc(m int) *lpEncoder { return b.encs[b.laneOf[m]] }

// mark returns the buffer lengths of every lane; rollback truncates to them.
func (b *batch) mark(dst []int) []int {
	dst = dst[:0]
	for _, e := range b.encs {
		dst = append(dst, len(e.buf()))
	}
	return dst
}

func (b *batch) rollback(marks []int) {
	for i, e := range b.encs {
		e.truncate(marks[i])
	}
}

func (b *batch) reset() {
	clear(b.msgs)
	b.msgs, b.lines = b.msgs[:0], b.lines[:0]
	for l, e := range b.encs {
		e.reset(e.buf())
		b.ends[l] = b.ends[l][:0]
	}
	b.nlines, b.msgBytes = 0, 0
}

func newWorker(in *Ingester, cons jetstream.Consumer, stream string, budget int) *worker {
	w := &worker{in: in, cons: cons, stream: stream, budget: budget, counted: in.m.consumed.WithLabelValues(stream), reports: newReportDecoder(), meters: newMeterDecoder()}
	w.writeCh = make(chan *batch, 1)
	for i, t := range in.targets {
		w.batches = append(w.batches, newBatch(i, t, in.levels))
		w.free = append(w.free, make(chan *batch, 2))
		w.free[i] <- newBatch(i, t, in.levels)
	}
	return w
}

func (w *worker) newWriter() *writer {
	wr := &writer{w: w}
	if w.in.cfg.GzipLevel > 0 {
		wr.gz, _ = gzip.NewWriterLevel(nil, w.in.cfg.GzipLevel)
	}
	return wr
}

// loop writes the batches handed over until the worker closes writeCh.
func (wr *writer) loop(ctx context.Context) {
	for b := range wr.w.writeCh {
		wr.writeRange(ctx, b, 0, len(b.msgs))
		wr.w.in.m.inflight.Set(float64(wr.w.in.inflight.Add(-int64(b.msgBytes))))
		b.reset()
		wr.w.free[b.idx] <- b
	}
}

// run takes messages from in until ctx ends, then hands every batch it
// holds to the writer (which writes under wctx: stop_timeout longer) and
// NAKs whatever still arrives until drained is closed.
func (w *worker) run(ctx, wctx context.Context, in <-chan jetstream.Msg, drained <-chan struct{}) {
	wr := w.newWriter()
	done := make(chan struct{})
	go func() { wr.loop(wctx); close(done) }()
	defer func() {
		close(w.writeCh)
		<-done
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		wait := w.in.cfg.BatchWait
		now := time.Now()
		for _, b := range w.batches {
			if len(b.msgs) > 0 {
				wait = min(wait, b.started.Add(w.in.cfg.BatchWait).Sub(now))
			}
		}
		if wait > 0 {
			timer.Reset(wait)
			select {
			case msg := <-in:
				w.counted.Inc()
				w.handle(wctx, msg)
			case <-timer.C:
			case <-ctx.Done():
			}
			timer.Stop()
		}
		if ctx.Err() == nil {
			w.flushDue(wctx, false)
		}
	}
	w.flushDue(wctx, true)
	for {
		select {
		case msg := <-in:
			w.in.nakStopping(msg)
		case <-drained:
			for {
				select {
				case msg := <-in:
					w.in.nakStopping(msg)
				default:
					return
				}
			}
		}
	}
}

// flushDue writes the batches whose wait is over (all non-empty ones when all is set).
func (w *worker) flushDue(ctx context.Context, all bool) {
	now := time.Now()
	for _, b := range w.batches {
		if len(b.msgs) > 0 && (all || now.Sub(b.started) >= w.in.cfg.BatchWait) {
			w.flush(ctx, b)
		}
	}
}

// handle decodes, checks and encodes one message into its target's batch.
func (w *worker) handle(ctx context.Context, msg jetstream.Msg) {
	subject := msg.Subject()
	t := w.in.route(subject)
	if t == nil {
		w.reject(ctx, msg, poisonf(ReasonNoTarget, "no target matches %s", subject))
		return
	}
	var b *batch
	for _, bb := range w.batches {
		if bb.t == t {
			b = bb
		}
	}
	now := w.in.now()
	tw := *w.in.tw.Load()
	var expect int
	var encode func() (int, error)
	switch {
	case strings.HasPrefix(subject, telemetry.PowerPrefix+"."):
		if strings.Count(subject[len(telemetry.PowerPrefix)+1:], ".") != 4 {
			w.reject(ctx, msg, poisonf(ReasonSubject, "subject %s: want %s.<site>.<hall>.<row>.<rack>.<node>", subject, telemetry.PowerPrefix))
			return
		}
		if len(msg.Data()) == 0 {
			w.reject(ctx, msg, poisonf(ReasonDecode, "empty payload"))
			return
		}
		r, err := w.reports.decode(msg.Data())
		if err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonDecode, err: err})
			return
		}
		if err := checkReport(subject, r, now, tw, &w.in.cfg.Plausible); err != nil {
			w.reject(ctx, msg, err)
			return
		}
		if id := msg.Headers().Get(telemetry.HeaderMsgID); id != "" {
			if err := telemetry.CheckMsgID(id, r.Node, r.WindowEndUnixNs); err != nil {
				w.reject(ctx, msg, &poison{reason: ReasonForgedID, err: err})
				return
			}
		}
		expect = 1 + len(r.Gpus)
		encode = func() (int, error) { return w.encodeReport(b, r) }
	case strings.HasPrefix(subject, telemetry.RollupPrefix+"."):
		level, path, err := telemetry.ParseRollupSubject(subject)
		if err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonSubject, err: err})
			return
		}
		r := &w.rollup
		if len(msg.Data()) == 0 {
			w.reject(ctx, msg, poisonf(ReasonDecode, "empty payload"))
			return
		}
		if err := w.unmarsh.Unmarshal(msg.Data(), r); err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonDecode, err: err})
			return
		}
		if err := checkRollup(level, path, r, now, tw, len(w.in.levels)); err != nil {
			w.reject(ctx, msg, err)
			return
		}
		expect = 1
		encode = func() (int, error) { return b.enc(iRollup).rollup(level, path, r) }
	case strings.HasPrefix(subject, telemetry.AlertPrefix+"."):
		sev, rule, err := parseAlertSubject(subject)
		if err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonSubject, err: err})
			return
		}
		a := &w.alert
		if len(msg.Data()) == 0 {
			w.reject(ctx, msg, poisonf(ReasonDecode, "empty payload"))
			return
		}
		if err := w.unmarsh.Unmarshal(msg.Data(), a); err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonDecode, err: err})
			return
		}
		if err := checkAlert(sev, rule, a, now, tw); err != nil {
			w.reject(ctx, msg, err)
			return
		}
		expect = 1
		encode = func() (int, error) { return b.enc(iAlert).alert(sev, rule, a) }
	case strings.HasPrefix(subject, telemetry.MeterPrefix+"."):
		path, meter, err := telemetry.ParseMeterSubject(subject)
		if err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonSubject, err: err})
			return
		}
		if len(msg.Data()) == 0 {
			w.reject(ctx, msg, poisonf(ReasonDecode, "empty payload"))
			return
		}
		r, err := w.meters.decode(msg.Data())
		if err != nil {
			w.reject(ctx, msg, &poison{reason: ReasonDecode, err: err})
			return
		}
		if err := checkMeter(path, meter, r, now, tw, w.in.levels, &w.in.cfg.Plausible); err != nil {
			w.reject(ctx, msg, err)
			return
		}
		if id := msg.Headers().Get(telemetry.HeaderMsgID); id != "" {
			if want := telemetry.MeterReportMsgID(r); id != want {
				w.reject(ctx, msg, poisonf(ReasonForgedID, "Nats-Msg-Id %q: want %q for this report", id, want))
				return
			}
		}
		expect = 1
		encode = func() (int, error) { return b.enc(iMeter).meter(r) }
	default:
		w.reject(ctx, msg, poisonf(ReasonSubject, "subject %s is not a power, rollup, alert or meter subject", subject))
		return
	}
	if len(b.msgs) > 0 && b.nlines+expect > w.in.cfg.BatchLines {
		w.flush(ctx, b)
		b = w.batches[b.idx] // the closures above see the fresh batch
	}
	n, err := encode()
	if err != nil {
		w.reject(ctx, msg, &poison{reason: ReasonEncode, err: err})
		return
	}
	if n == 0 { // nothing to write (cannot happen: a node point is always written)
		_ = msg.Ack()
		return
	}
	if len(b.msgs) == 0 {
		b.started = time.Now()
	}
	b.msgs = append(b.msgs, msg)
	for l, e := range b.encs {
		b.ends[l] = append(b.ends[l], len(e.buf()))
	}
	b.lines = append(b.lines, n)
	b.nlines += n
	b.msgBytes += len(msg.Data())
	w.in.m.inflight.Set(float64(w.in.inflight.Add(int64(len(msg.Data())))))
	if b.nlines >= w.in.cfg.BatchLines || b.msgBytes >= w.budget/2 {
		w.flush(ctx, b)
	}
}

// encodeReport writes a node report's points (GPU points downsampled when
// gpu_every > 1): node and gpu lines to their lanes.
func (w *worker) encodeReport(b *batch, r *telemetry.NodeReport) (int, error) {
	ne, ge := b.enc(iNode), b.enc(iGPU)
	if w.in.down == nil && ne == ge {
		return ne.report(r, true)
	}
	w.marks = b.mark(w.marks)
	n, err := ne.report(r, false)
	if err != nil {
		return 0, err
	}
	if w.in.down == nil {
		k, err := ge.gpuLinesAfter(ne, r, r.Gpus)
		if err != nil {
			b.rollback(w.marks)
			return 0, err
		}
		return n + k, nil
	}
	var gerr error
	w.in.down.add(r, func(gs []*telemetry.Gpu) {
		var k int
		k, gerr = ge.gpuLinesAfter(ne, r, gs)
		n += k
	})
	if gerr != nil {
		b.rollback(w.marks)
		return 0, gerr
	}
	return n, nil
}

// reject dead-letters a message and acks it; if the dead letter cannot be
// stored the message stays unacked and comes back.
func (w *worker) reject(ctx context.Context, msg jetstream.Msg, err error) {
	reason, ok := asPoison(err)
	if !ok {
		reason = ReasonDecode
	}
	if dlErr := w.in.deadLetter(ctx, msg, reason, err); dlErr != nil {
		w.in.warnLimited("dead-letter failed; message left for redelivery", "subject", msg.Subject(), "err", dlErr)
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	_ = msg.Ack()
}

// flush hands b to the writer (which acks its messages once InfluxDB has
// accepted them) and continues with the target's other batch.
func (w *worker) flush(_ context.Context, b *batch) {
	w.writeCh <- b
	w.batches[b.idx] = <-w.free[b.idx]
}

// backoff is exponential from lo to hi with ±25% jitter.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	j := time.Duration(time.Now().UnixNano() % int64(d/2+1))
	return d*3/4 + j
}

// sleepCtx sleeps d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
