package collector

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"
)

// Duplicate acks. JetStream de-duplicates per stream by Nats-Msg-Id, and a
// report's id <node>:<window_end_ms> is predictable. Any publisher allowed
// on the stream (another node, on its own subject) can send node B's next
// id first; B's real report is then acked Duplicate: true and never
// stored. So an ack with Duplicate: true is a delivery only if the stored
// message can be this collector's own:
//
//   - the entry had never been published (tried false): no earlier attempt
//     of ours can be in the stream, so the stored message is someone
//     else's. Unexplained: a forged id, a second collector running as
//     this node, or the clock stepped back onto a window already sent.
//     Counted (duplicate_acks_total{kind="unexplained"}), logged, and the
//     report re-published with <id>:<16 hex nonce> from crypto/rand, which
//     no one can predict: the stream stores it.
//   - the entry had been published before (a retry after an ack timeout
//     or a reconnect, or a replay from the disk buffer of an earlier
//     process): the stored message is almost surely that earlier attempt,
//     and this is the retry de-duplication that keeps the stream
//     exactly-once (docs/collector.md). Counted (kind="retry"), delivered.
//     A forger could only hide here by racing a publish of ours whose ack
//     was lost, which it cannot see (a node receives nothing of another
//     node's traffic); and its message, on its own subject with our id,
//     is dead-lettered by ingest as forged_id either way.
//   - a re-published entry (nonce id) acked Duplicate after a retry: its
//     own earlier attempt was stored. Delivered.
//
// ingest and the aggregator accept exactly <node>:<ms> and
// <node>:<ms>:<16 hex> for the subject's node (telemetry.CheckMsgID); the
// re-published copy is the same report, written as the same points.

// maxRepublish bounds re-publishes of one report (a server that acks
// everything as duplicate must not make the collector loop).
const maxRepublish = 5

// nonceLen is the hex length of the re-publish suffix.
const nonceLen = 16

// duplicate handles a Duplicate: true ack for the oldest entry (already
// taken off inflight). It returns false when the ack is a delivery after
// all (the caller commits it as published), true when it handled the
// entry (re-queued a copy, or gave up on it).
func (p *publisher) duplicate(f flight) bool {
	e := p.q.oldest()
	if f.tried {
		p.m.dupAcks.WithLabelValues("retry").Inc()
		return false // our own earlier attempt was stored
	}
	p.m.dupAcks.WithLabelValues("unexplained").Inc()
	base, _ := splitNonce(e.msgID)
	if e.republished >= maxRepublish {
		p.logger.Error("report acked as duplicate again and again; giving up on it", "msg_id", e.msgID, "republished", e.republished)
		p.q.commit()
		p.dropped(p.q.trim())
		return true
	}
	re := entry{subject: e.subject, msgID: base + ":" + newNonce(), data: e.data, replay: e.replay, republished: e.republished + 1}
	re.markReplayed()
	if ok, held := p.dupLog.ok(time.Now()); ok {
		p.logger.Warn("duplicate ack for a report never published before: another publisher used this node's Msg-Id (forged), a second collector runs as this node, or the clock stepped back; re-publishing it",
			"msg_id", e.msgID, "republish_id", re.msgID, "suppressed", held)
	}
	// Queue the copy before letting the original go: the disk buffer
	// always holds one of them.
	dropped, err := p.q.push(re)
	if err != nil {
		if ok, held := p.errLog.ok(time.Now()); ok {
			p.logger.Error("buffer write failed", "err", err, "suppressed", held)
		}
	}
	p.q.commit()
	p.m.republished.Inc()
	p.dropped(dropped + p.q.trim())
	return true
}

// splitNonce returns the <node>:<ms> part of id and whether id carries a
// re-publish nonce (":" and 16 lowercase hex digits after it).
func splitNonce(id string) (base string, nonced bool) {
	i := strings.LastIndexByte(id, ':')
	if i < 0 || len(id)-i-1 != nonceLen || strings.IndexByte(id[:i], ':') < 0 {
		return id, false
	}
	for _, c := range id[i+1:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return id, false
		}
	}
	return id[:i], true
}

// newNonce is 16 lowercase hex digits from crypto/rand (unpredictable, so
// no other publisher can forge the re-publish's id too).
func newNonce() string {
	var b [nonceLen / 2]byte
	_, _ = rand.Read(b[:]) // never fails since Go 1.24
	return hex.EncodeToString(b[:])
}
