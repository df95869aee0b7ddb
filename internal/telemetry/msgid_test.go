package telemetry

import (
	"errors"
	"testing"
)

func TestCheckMsgID(t *testing.T) {
	const end = 1_700_000_001_000_000_000 // ms 1700000001000
	f := func(id, node string, ok bool) {
		t.Helper()
		err := CheckMsgID(id, node, end)
		if (err == nil) != ok {
			t.Errorf("CheckMsgID(%q, %q): %v, want ok=%v", id, node, err, ok)
		}
		if err != nil && !errors.Is(err, ErrForgedMsgID) {
			t.Errorf("error %v does not wrap ErrForgedMsgID", err)
		}
	}
	f(MsgID("n1", end), "n1", true)
	f("n1:1700000001000", "n1", true)
	f("n1:1700000001000:0123456789abcdef", "n1", true)
	f("a:b:1700000001000", "a:b", true) // a node name with a colon
	f("a:b:1700000001000:ffffffffffffffff", "a:b", true)
	f("n1:1700000002000", "n1", false)                   // another window: would suppress the real one
	f("n2:1700000001000", "n1", false)                   // another node
	f("n11:1700000001000", "n1", false)                  // a node whose name extends it
	f("n1:1700000001000:0123456789ABCDEF", "n1", false)  // uppercase nonce
	f("n1:1700000001000:0123456789abcde", "n1", false)   // 15 hex
	f("n1:1700000001000:0123456789abcdef0", "n1", false) // 17 hex
	f("n1:1700000001000:", "n1", false)
	f("n1:01700000001000", "n1", false)
	f("n1:", "n1", false)
	f("n1", "n1", false)
	f("", "n1", false)
	f("garbage", "n1", false)
	if n := testing.AllocsPerRun(100, func() { _ = CheckMsgID("n1:1700000001000:0123456789abcdef", "n1", end) }); n != 0 {
		t.Errorf("CheckMsgID allocates %v times on a good id", n)
	}
}

func FuzzCheckMsgID(f *testing.F) {
	f.Add("n1:1700000001000", "n1", int64(1_700_000_001_000_000_000))
	f.Add("n1:1700000001000:0123456789abcdef", "n1", int64(1_700_000_001_000_000_000))
	f.Fuzz(func(t *testing.T, id, node string, end int64) {
		err := CheckMsgID(id, node, end)
		base := MsgID(node, end)
		ok := id == base || (len(id) == len(base)+1+MsgIDNonceLen && id[:len(base)+1] == base+":" && isLowerHex(id[len(base)+1:]))
		if (err == nil) != ok {
			t.Fatalf("CheckMsgID(%q, %q, %d) = %v, want ok=%v", id, node, end, err, ok)
		}
	})
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
