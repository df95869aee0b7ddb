package telemetry

import (
	"testing"
	"unicode"
)

// TestPlainASCIITokenAgrees: the ASCII fast path of ValidateToken accepts
// only what its rune rules accept, for every byte.
func TestPlainASCIITokenAgrees(t *testing.T) {
	for c := range 256 {
		s := "a" + string([]byte{byte(c)}) + "b"
		slowOK := true
		for _, r := range s {
			if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar {
				slowOK = false
			}
		}
		if plainASCIIToken(s) && !slowOK {
			t.Errorf("byte %#x: fast path accepts what the rune rules reject", c)
		}
		if c < 0x80 && plainASCIIToken(s) != slowOK {
			t.Errorf("ASCII byte %#x: fast path %v, rune rules %v", c, plainASCIIToken(s), slowOK)
		}
		if (ValidateToken(s) == nil) != slowOK {
			t.Errorf("ValidateToken(%q) = %v, rune rules say ok=%v", s, ValidateToken(s), slowOK)
		}
	}
	for _, s := range []string{"h1", "node-01_a", "é", "a\u00a0b", "a\ufffdb"} {
		want := s == "h1" || s == "node-01_a" || s == "é"
		if got := ValidateToken(s) == nil; got != want {
			t.Errorf("ValidateToken(%q) ok=%v, want %v", s, got, want)
		}
	}
}
