package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// lost is what of one message InfluxDB did not store (field type
// conflicts, 3.x per-line refusals): dead-lettered as line protocol once
// the rest of the message is written.
type lost struct {
	lines  []byte
	reason string
	why    []string // one per conflict or refused line kind
	meas   []string // measurement.field of each conflict
	types  []string
}

func (l *lost) add(line []byte, reason, why, measField, types string) {
	l.lines = append(l.lines, line...)
	if l.reason == "" || reason == ReasonConflict {
		l.reason = reason
	}
	for _, w := range l.why {
		if w == why {
			return
		}
	}
	l.why = append(l.why, why)
	if measField != "" {
		l.meas = append(l.meas, measField)
		l.types = append(l.types, types)
	}
}

// span returns lane l's lines of messages [lo, hi).
func (b *batch) span(l, lo, hi int) []byte {
	start := 0
	if lo > 0 {
		start = b.ends[l][lo-1]
	}
	return b.encs[l].buf()[start:b.ends[l][hi-1]]
}

// msgOf returns the index of the message whose lines in lane l include
// byte offset off of the lane buffer.
func (b *batch) msgOf(l, lo, hi, off int) int {
	for i := lo; i < hi; i++ {
		if off < b.ends[l][i] {
			return i
		}
	}
	return hi - 1
}

// forLines calls f for each line of lane l's messages [lo, hi) with the
// line's message index and offset in the lane buffer.
func (b *batch) forLines(l, lo, hi int, f func(i, off int, line []byte)) {
	buf := b.encs[l].buf()
	start := 0
	if lo > 0 {
		start = b.ends[l][lo-1]
	}
	for i := lo; i < hi; i++ {
		end := b.ends[l][i]
		for off := start; off < end; {
			nl := strings.IndexByte(string(buf[off:end]), '\n')
			next := end
			if nl >= 0 {
				next = off + nl + 1
			}
			f(i, off, buf[off:next])
			off = next
		}
		start = end
	}
}

// writeRange writes messages [lo, hi) of b, lane by lane, until InfluxDB
// accepts them or ctx ends, then acks them (after dead-lettering any lines
// InfluxDB refused one by one). Rejections InfluxDB does not explain line
// by line halve the range down to single messages, which are dead-lettered
// whole with InfluxDB's error text. When ctx ends first, the messages are
// NAKed: JetStream redelivers them at once, to this or another process.
func (wr *writer) writeRange(ctx context.Context, b *batch, lo, hi int) {
	if len(wr.lost) < len(b.msgs) {
		wr.lost = append(wr.lost, make([]lost, len(b.msgs)-len(wr.lost))...)
	}
	for i := lo; i < hi; i++ {
		l := &wr.lost[i]
		l.lines, l.reason, l.why, l.meas, l.types = l.lines[:0], "", l.why[:0], l.meas[:0], l.types[:0]
	}
	for l := range b.encs {
		if len(b.span(l, lo, hi)) == 0 {
			continue
		}
		switch wr.writeLane(ctx, b, l, lo, hi) {
		case laneAbandoned:
			for _, m := range b.msgs[lo:hi] {
				_ = m.Nak()
			}
			return
		case laneSplit:
			return // the halves were written and acked
		}
	}
	w := wr.w
	for i := lo; i < hi; i++ {
		m, l := b.msgs[i], &wr.lost[i]
		if len(l.lines) > 0 {
			if err := w.in.deadLetterLines(ctx, m, l); err != nil {
				w.in.warnLimited("dead-letter failed; message left for redelivery", "subject", m.Subject(), "err", err)
				_ = m.NakWithDelay(5 * time.Second)
				continue
			}
		}
		_ = m.Ack()
	}
	w.in.m.batches.WithLabelValues(b.t.Name).Inc()
}

type laneResult int

const (
	laneDone laneResult = iota
	laneAbandoned
	laneSplit
)

// writeLane writes lane l of messages [lo, hi): lines of remembered
// conflicts go to wr.lost instead (except when the conflict is probed).
func (wr *writer) writeLane(ctx context.Context, b *batch, l, lo, hi int) laneResult {
	w, t := wr.w, b.t
	lastTouch := time.Now()
	w.in.expireConflicts(ctx, t)
	var probing []*fieldConflict
	now := time.Now()
	for _, c := range t.conflicts.snapshot() {
		if c.lane == l && !now.Before(c.probeAt) && b.laneHits(l, lo, hi, c) {
			// A probe only counts if the batch has lines of the conflict.
			c.probeAt = now.Add(w.in.cfg.ConflictProbe)
			probing = append(probing, c)
		}
	}
	partials := 0
	for attempt := 0; ; attempt++ {
		body, lines := wr.laneBody(b, l, lo, hi, probing)
		if len(body) == 0 {
			return laneDone
		}
		err := wr.send(ctx, t, l, body)
		if err == nil {
			w.in.m.points.WithLabelValues(t.Name).Add(float64(lines))
			w.in.lastWrite.Store(writeOK)
			for _, c := range probing {
				w.in.resolveConflict(ctx, t, c)
			}
			return laneDone
		}
		if ctx.Err() != nil {
			return laneAbandoned
		}
		var we *WriteError
		if errors.As(err, &we) && we.Rejected {
			if ca, ok := parseConflict(we.Message); ok {
				w.in.lastWrite.Store(writeOK)
				probing = stillProbing(probing, ca)
				switch wr.partial(ctx, b, l, lo, hi, body, probing, ca, lines) {
				case partialDone:
					for _, c := range probing {
						w.in.resolveConflict(ctx, t, c)
					}
					return laneDone
				case partialAbandoned:
					return laneAbandoned
				}
				if partials++; partials < 8 {
					continue // more lines than the reported conflict's were dropped: write the rest again
				}
				// InfluxDB keeps dropping lines it does not explain: find them by halving.
			}
			if len(we.Lines) > 0 {
				w.in.lastWrite.Store(writeOK)
				wr.refusedLines(b, l, lo, hi, body, probing, we)
				return laneDone
			}
			if hi-lo == 1 {
				w.reject(ctx, b.msgs[lo], &poison{reason: ReasonRejected, err: fmt.Errorf("%s", we.Message)})
				return laneSplit
			}
			mid := lo + (hi-lo)/2
			wr.writeRange(ctx, b, lo, mid)
			wr.writeRange(ctx, b, mid, hi)
			return laneSplit
		}
		w.in.lastWrite.Store(writeFailing)
		w.in.m.retries.WithLabelValues(t.Name).Inc()
		wait := backoff(attempt, w.in.cfg.RetryMin, w.in.cfg.RetryMax)
		if we != nil && we.RetryAfter > 0 {
			wait = we.RetryAfter
		}
		w.in.warnLimited("influxdb write failed; retrying", "target", t.Name, "lines", lines, "attempt", attempt+1, "retry_in", wait, "err", err)
		// Keep the messages ours while we wait (the backlog stays in the
		// stream; these few stay with this worker), in steps shorter than ack_wait.
		for until := time.Now().Add(wait); ; {
			if time.Since(lastTouch) > w.in.cfg.AckWait/3 {
				for _, m := range b.msgs[lo:hi] {
					_ = m.InProgress()
				}
				lastTouch = time.Now()
			}
			left := time.Until(until)
			if left <= 0 {
				break
			}
			if !sleepCtx(ctx, min(left, w.in.cfg.AckWait/3)) {
				return laneAbandoned
			}
		}
	}
}

// laneHits reports whether lane l of [lo, hi) has a line of conflict c.
func (b *batch) laneHits(l, lo, hi int, c *fieldConflict) bool {
	hit := false
	b.forLines(l, lo, hi, func(_, _ int, line []byte) {
		hit = hit || lineHits(line, c.measurement, c.field, c)
	})
	return hit
}

// stillProbing drops from probing the conflict InfluxDB just reported again.
func stillProbing(probing []*fieldConflict, ca conflictAnswer) []*fieldConflict {
	out := probing[:0]
	for _, c := range probing {
		if c.measurement == ca.measurement && c.field == ca.field {
			continue
		}
		out = append(out, c)
	}
	return out
}

// send gzips body if the sink wants it and writes it, counting the request.
func (wr *writer) send(ctx context.Context, t *target, l int, body []byte) error {
	w := wr.w
	gz := false
	if t.sink.compresses() && wr.gz != nil {
		wr.gzBuf.Reset()
		wr.gz.Reset(&wr.gzBuf)
		_, _ = wr.gz.Write(body)
		_ = wr.gz.Close()
		body, gz = wr.gzBuf.Bytes(), true
	}
	start := time.Now()
	err := t.sink.write(ctx, l, body, gz)
	w.in.m.latency.WithLabelValues(t.Name).Observe(time.Since(start).Seconds())
	w.in.m.requests.WithLabelValues(t.Name).Inc()
	return err
}

// laneBody is lane l's lines of [lo, hi) less those of remembered conflicts
// (which go to wr.lost; probed conflicts' lines stay in), and its line count.
func (wr *writer) laneBody(b *batch, l, lo, hi int, probing []*fieldConflict) ([]byte, int) {
	var cs []*fieldConflict
	for _, c := range b.t.conflicts.snapshot() {
		if c.lane == l && !containsConflict(probing, c) {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		span := b.span(l, lo, hi)
		n := 0
		for _, c := range span {
			if c == '\n' {
				n++
			}
		}
		return span, n
	}
	wr.body = wr.body[:0]
	wr.bodyMsg = wr.bodyMsg[:0]
	n := 0
	b.forLines(l, lo, hi, func(i, _ int, line []byte) {
		for _, c := range cs {
			if lineHits(line, c.measurement, c.field, c) {
				if !wr.lostHas(i, line) {
					wr.lost[i].add(line, ReasonConflict, c.String(), c.measurement+"."+c.field, c.got+" (InfluxDB has "+c.have+")")
					c.hit()
					wr.w.in.m.conflictLines.WithLabelValues(b.t.Name, c.measurement, c.field).Inc()
				}
				return
			}
		}
		wr.body = append(wr.body, line...)
		wr.bodyMsg = append(wr.bodyMsg, i)
		n++
	})
	return wr.body, n
}

// lostHas reports whether line is already in message i's lost lines (a
// lane written again after a partial answer).
func (wr *writer) lostHas(i int, line []byte) bool {
	return bytes.Contains(wr.lost[i].lines, line)
}

func containsConflict(list []*fieldConflict, c *fieldConflict) bool {
	for _, o := range list {
		if o == c {
			return true
		}
	}
	return false
}

type partialResult int

const (
	partialDone partialResult = iota
	partialAgain
	partialAbandoned
)

// partial handles a field type conflict answer to body (lane l, messages
// [lo, hi)): InfluxDB stored every line but the conflicting ones. The
// lines with the reported measurement and field are the candidates; when
// InfluxDB dropped exactly that many, they are the lost ones (no further
// request). When it dropped fewer, the candidates span shards of which
// only some conflict: each shard's candidates are written alone to find
// out (one request per shard). When it dropped more, another conflict is
// hidden behind the reported one: partialAgain writes the rest again.
func (wr *writer) partial(ctx context.Context, b *batch, l, lo, hi int, body []byte, probing []*fieldConflict, ca conflictAnswer, lines int) partialResult {
	w, t := wr.w, b.t
	bucket := t.Lanes()[l]
	dur := w.in.shardDuration(ctx, t, bucket)
	type cand struct {
		line []byte
		msg  int
		ts   int64
	}
	var cands []cand
	wr.forBodyLines(b, l, lo, hi, body, func(i int, line []byte) {
		if lineHits(line, ca.measurement, ca.field, nil) {
			_, ts, _ := lineFields(line)
			cands = append(cands, cand{append([]byte(nil), line...), i, ts})
		}
	})
	// Group the candidates by shard.
	type group struct {
		start, end int64
		cands      []cand
	}
	var groups []*group
	for _, c := range cands {
		s, e := shardRange(c.ts, dur)
		var g *group
		for _, o := range groups {
			if o.start == s && o.end == e {
				g = o
			}
		}
		if g == nil {
			g = &group{start: s, end: e}
			groups = append(groups, g)
		}
		g.cands = append(g.cands, c)
	}
	conflicting := groups
	if ca.dropped >= 0 && ca.dropped < len(cands) && len(groups) > 1 {
		conflicting = nil
		for _, g := range groups {
			var gb []byte
			for _, c := range g.cands {
				gb = append(gb, c.line...)
			}
			err := wr.send(ctx, t, l, gb)
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return partialAbandoned
			}
			var we *WriteError
			if errors.As(err, &we) && we.Rejected {
				if _, ok := parseConflict(we.Message); ok {
					conflicting = append(conflicting, g)
					continue
				}
			}
			return partialAbandoned // could not tell: redeliver, try again
		}
	}
	lostN := 0
	for _, g := range conflicting {
		c, isNew := t.conflicts.add(&fieldConflict{lane: l, measurement: ca.measurement, field: ca.field, got: ca.got, have: ca.have,
			bucket: bucket, start: g.start, end: g.end, since: time.Now(), probeAt: time.Now().Add(w.in.cfg.ConflictProbe)})
		if isNew {
			w.in.newConflict(ctx, t, c)
		}
		for _, cd := range g.cands {
			wr.lost[cd.msg].add(cd.line, ReasonConflict, c.String(), c.measurement+"."+c.field, c.got+" (InfluxDB has "+c.have+")")
			c.hit()
			w.in.m.conflictLines.WithLabelValues(t.Name, c.measurement, c.field).Inc()
			lostN++
		}
	}
	if ca.dropped > lostN {
		return partialAgain
	}
	w.in.m.points.WithLabelValues(t.Name).Add(float64(lines - lostN))
	return partialDone
}

// forBodyLines calls f for each line of body (lane l's lines of [lo, hi),
// filtered by laneBody when wr.bodyMsg maps its lines) with its message.
func (wr *writer) forBodyLines(b *batch, l, lo, hi int, body []byte, f func(i int, line []byte)) {
	if len(wr.bodyMsg) > 0 && len(body) > 0 && len(wr.body) > 0 && &body[0] == &wr.body[0] {
		k := 0
		for off := 0; off < len(body); k++ {
			nl := strings.IndexByte(string(body[off:]), '\n')
			next := len(body)
			if nl >= 0 {
				next = off + nl + 1
			}
			f(wr.bodyMsg[k], body[off:next])
			off = next
		}
		return
	}
	b.forLines(l, lo, hi, func(i, _ int, line []byte) { f(i, line) })
}

// refusedLines handles a 3.x partial write: the listed lines (1-based in
// body) were refused, the rest stored.
func (wr *writer) refusedLines(b *batch, l, lo, hi int, body []byte, probing []*fieldConflict, we *WriteError) {
	refused := map[int]string{}
	for _, le := range we.Lines {
		refused[le.Line] = le.Message
	}
	n := 0
	wr.forBodyLines(b, l, lo, hi, body, func(i int, line []byte) {
		n++
		msg, ok := refused[n]
		if !ok {
			return
		}
		reason, mf, types := ReasonRejected, "", ""
		if m := re3xColumn.FindStringSubmatch(msg); m != nil && strings.Contains(msg, "type") {
			reason, mf, types = ReasonConflict, string(lineMeasurement(line))+"."+m[1], msg
		}
		wr.lost[i].add(line, reason, msg, mf, types)
	})
	wr.w.in.m.points.WithLabelValues(b.t.Name).Add(float64(n - len(refused)))
	_ = probing
}

// deadLetterLines publishes the lines of msg that InfluxDB refused, as
// line protocol, with the conflicting measurement.field and types.
func (in *Ingester) deadLetterLines(ctx context.Context, msg jetstream.Msg, l *lost) error {
	extra := map[string]string{
		HeaderDeadFormat: "line-protocol",
	}
	if len(l.meas) > 0 {
		extra[HeaderDeadField] = strings.Join(l.meas, ",")
		extra[HeaderDeadTypes] = strings.Join(l.types, ",")
	}
	return in.publishDeadLetter(ctx, msg, l.reason, errors.New(strings.Join(l.why, "; ")), l.lines, extra)
}
