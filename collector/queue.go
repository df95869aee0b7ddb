package collector

// entry is one encoded report on its way to JetStream.
type entry struct {
	subject string
	msgID   string
	data    []byte // encoded NodeReport
	replay  bool   // data carries replayed=true
	onDisk  bool   // written to the disk log
	// tried: published before, by this process or (entries loaded from the
	// disk buffer) maybe by an earlier one, so the server may hold it.
	tried bool
	// republished counts duplicate-ack re-publishes (see publisher.duplicate).
	republished int
}

// replayedField is NodeReport field 12 (replayed), varint, true. Appending
// it to an encoded report sets the flag: a later occurrence of a scalar
// field wins when protobuf decodes.
var replayedField = [2]byte{12<<3 | 0, 1}

// markReplayed flags e as sent from the buffer (once).
func (e *entry) markReplayed() {
	if e.replay {
		return
	}
	d := make([]byte, len(e.data), len(e.data)+len(replayedField))
	copy(d, e.data)
	e.data = append(d, replayedField[:]...)
	e.replay = true
}

// queue is the bounded, ordered buffer of reports not yet acknowledged by
// JetStream. The first `sent` entries are in flight; the rest wait. With a
// diskLog every entry is also written to disk, so a restarted collector
// replays what the previous process had not delivered.
type queue struct {
	items    []entry
	head     int // items[head:] are live
	sent     int // items[head:head+sent] are in flight
	bytes    int64
	maxN     int
	maxBytes int64
	disk     *diskLog // nil: memory only
}

func newQueue(maxN int, maxBytes int64, disk *diskLog) *queue {
	return &queue{maxN: maxN, maxBytes: maxBytes, disk: disk}
}

// load puts entries recovered from disk in front (at start-up).
func (q *queue) load(es []entry) {
	for _, e := range es {
		e.markReplayed()
		e.onDisk = true
		e.tried = true // the previous process may have published it
		q.items = append(q.items, e)
		q.bytes += int64(len(e.data))
	}
}

// len is the number of live entries, in flight or not.
func (q *queue) len() int { return len(q.items) - q.head }

// unsent is the number of entries waiting to be sent.
func (q *queue) unsent() int { return q.len() - q.sent }

// push appends e and returns how many of the oldest entries were dropped to
// stay within the bounds. Entries in flight are never dropped, so the
// bound may be exceeded by at most the number in flight until they resolve.
func (q *queue) push(e entry) (dropped int, err error) {
	if q.disk != nil {
		err = q.disk.append(e) // memory still holds it; only a restart would lose it
		e.onDisk = err == nil
	}
	q.items = append(q.items, e)
	q.bytes += int64(len(e.data))
	return q.trim(), err
}

// trim drops the oldest waiting entries beyond the bounds (never the
// newest, never one in flight).
func (q *queue) trim() int {
	n, onDisk := 0, 0
	for q.sent == 0 && q.len() > 1 && (q.len() > q.maxN || q.bytes > q.maxBytes) {
		if q.popHead() {
			onDisk++
		}
		n++
	}
	if onDisk > 0 {
		q.disk.advance(onDisk)
	}
	return n
}

// popHead removes the oldest entry and reports whether it was on disk.
func (q *queue) popHead() bool {
	onDisk := q.items[q.head].onDisk
	q.bytes -= int64(len(q.items[q.head].data))
	q.items[q.head] = entry{}
	q.head++
	if q.head > 64 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	return onDisk
}

// next returns the oldest waiting entry and counts it as in flight.
func (q *queue) next() (entry, bool) {
	if q.unsent() == 0 {
		return entry{}, false
	}
	e := q.items[q.head+q.sent]
	q.items[q.head+q.sent].tried = true
	q.sent++
	return e, true
}

// oldest is the oldest entry (the one the oldest ack is for).
func (q *queue) oldest() entry { return q.items[q.head] }

// unsend undoes the last next (its publish failed before leaving).
func (q *queue) unsend() {
	if q.sent > 0 {
		q.sent--
	}
}

// markWaiting flags every waiting entry replayed.
func (q *queue) markWaiting() {
	for i := q.head + q.sent; i < len(q.items); i++ {
		q.items[i].markReplayed()
	}
}

// commit removes the oldest in-flight entry: JetStream acknowledged it.
func (q *queue) commit() {
	if q.sent == 0 {
		return
	}
	q.sent--
	if q.popHead() {
		q.disk.advance(1)
	}
}

// rewind makes every in-flight entry wait again (an ack failed); they will
// be sent again, flagged replayed. JetStream's dedup drops any that did
// arrive.
func (q *queue) rewind() {
	q.sent = 0
	q.markWaiting()
}
