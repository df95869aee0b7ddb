package telemetry

import (
	"errors"
	"strconv"
	"strings"
)

// ErrForgedMsgID is wrapped by CheckMsgID's errors.
var ErrForgedMsgID = errors.New("Nats-Msg-Id does not name the report's node and window")

// MsgIDNonceLen is the length of the nonce a collector appends to a
// re-published report's id (lowercase hex).
const MsgIDNonceLen = 16

// CheckMsgID reports whether id is a Nats-Msg-Id that a collector may
// publish a report of node for the window ending at windowEndUnixNs with:
// MsgID(node, windowEnd), or MsgID(node, windowEnd) + ":" + 16 lowercase
// hex characters (a report re-published after JetStream answered Duplicate
// for a window the collector never had acked). Any other id could make
// JetStream's dedup drop another node's or another window's report (a
// forged id) and is refused. It allocates nothing.
func CheckMsgID(id, node string, windowEndUnixNs int64) error {
	rest, ok := strings.CutPrefix(id, node)
	if !ok || len(rest) < 2 || rest[0] != ':' {
		return forged(id, node, windowEndUnixNs)
	}
	rest = rest[1:]
	ms, nonce, hasNonce := strings.Cut(rest, ":")
	var buf [24]byte
	if ms != string(strconv.AppendInt(buf[:0], windowEndUnixNs/1e6, 10)) {
		return forged(id, node, windowEndUnixNs)
	}
	if !hasNonce {
		return nil
	}
	if len(nonce) != MsgIDNonceLen {
		return forged(id, node, windowEndUnixNs)
	}
	for i := 0; i < len(nonce); i++ {
		if c := nonce[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return forged(id, node, windowEndUnixNs)
		}
	}
	return nil
}

// forged copies id and node so that neither escapes CheckMsgID: a caller
// may pass a string converted from a []byte without allocating.
func forged(id, node string, windowEndUnixNs int64) error {
	if len(id) > 200 {
		id = id[:200] + "…"
	}
	return &msgIDError{id: strings.Clone(id), want: MsgID(strings.Clone(node), windowEndUnixNs)}
}

type msgIDError struct{ id, want string }

func (e *msgIDError) Error() string {
	return ErrForgedMsgID.Error() + ": got " + strconv.Quote(e.id) + ", want " + strconv.Quote(e.want) + " or it + \":<16 hex>\""
}

func (e *msgIDError) Unwrap() error { return ErrForgedMsgID }
