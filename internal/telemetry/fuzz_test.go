package telemetry

import (
	"strings"
	"testing"
	"unicode"

	"google.golang.org/protobuf/proto"
)

// FuzzNodeReportDecode: arbitrary bytes never panic the decoder, and what
// decodes re-encodes to something that decodes to the same report.
func FuzzNodeReportDecode(f *testing.F) {
	for _, r := range []*NodeReport{benchReport(false), benchReport(true), {}} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x60, 0x01})             // replayed=true appended alone
	f.Add([]byte{0x52, 0x05, 0x2a, 0x03}) // a Gpu cut short
	f.Fuzz(func(t *testing.T, data []byte) {
		var r NodeReport
		if err := proto.Unmarshal(data, &r); err != nil {
			return
		}
		b, err := proto.Marshal(&r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var r2 NodeReport
		if err := proto.Unmarshal(b, &r2); err != nil {
			t.Fatalf("re-encoded report does not decode: %v", err)
		}
		if !proto.Equal(&r, &r2) {
			t.Fatalf("round trip changed the report:\n%v\n%v", &r, &r2)
		}
		_ = ReportLocation(&r)
	})
}

// FuzzParsePowerSubject: the parser never panics, accepts only subjects
// whose five tokens are valid (no '.', '*', '>', whitespace or empty
// token), and round-trips through PowerSubject.
func FuzzParsePowerSubject(f *testing.F) {
	for _, s := range []string{
		"megawatch.v1.power.dc1.h1.r01.rk01.gpu-h1-r01-rk01-n01",
		"megawatch.v1.power.dc1.h1.r01.rk01",
		"megawatch.v1.power.dc1.h1.r01.rk01.n.extra",
		"megawatch.v1.power.dc1.h1..rk01.n1",
		"megawatch.v1.power.dc1.h1.r*.rk01.n1",
		"megawatch.v1.power.dc1.h1.r01.rk01.>",
		"megawatch.v1.power.dc1.h 1.r01.rk01.n1",
		"megawatch.v1.power.dc1.h1.r01.rk01.n1\t",
		"megawatch.v1.rollup.hall.dc1.h1",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		loc, err := ParsePowerSubject(s)
		if err != nil {
			return
		}
		for _, tok := range []string{loc.Site, loc.Hall, loc.Row, loc.Rack, loc.Node} {
			if tok == "" || strings.ContainsAny(tok, ".*>") || strings.IndexFunc(tok, unicode.IsSpace) >= 0 {
				t.Fatalf("%q accepted with bad token %q", s, tok)
			}
		}
		back, err := PowerSubject(loc)
		if err != nil || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, err)
		}
	})
}

func TestParsePowerSubjectRejects(t *testing.T) {
	const ok = "megawatch.v1.power.dc1.h1.r01.rk01.gpu-h1-r01-rk01-n01"
	if _, err := ParsePowerSubject(ok); err != nil {
		t.Fatalf("%s: %v", ok, err)
	}
	f := func(s string) {
		t.Helper()
		if loc, err := ParsePowerSubject(s); err == nil {
			t.Errorf("%q accepted as %v", s, loc)
		}
	}
	f("megawatch.v1.power.dc1.h1.r01.rk01")          // too few tokens
	f("megawatch.v1.power.dc1.h1.r01.rk01.n1.x")     // too many (a '.' in a name)
	f("megawatch.v1.power.dc1.h1..rk01.n1")          // empty token
	f("megawatch.v1.power.dc1.h1.r01.rk01.")         // empty last token
	f("megawatch.v1.power.dc1.h1.r*.rk01.n1")        // '*'
	f("megawatch.v1.power.dc1.h1.r01.rk01.>")        // '>'
	f("megawatch.v1.power.dc1.h1.r01.rk01.n>1")      // '>' inside
	f("megawatch.v1.power.dc1.h 1.r01.rk01.n1")      // space
	f("megawatch.v1.power.dc1.h1.r01.rk01.n1\n")     // newline
	f("megawatch.v1.power.dc1.h1.r01.rk01.n\u00a01") // non-breaking space
	f("megawatch.v1.rollup.dc1.h1.r01.rk01.n1")      // wrong prefix
	f("megawatch.v1.power.dc1.h1.r01.rk01.n1\x00")   // control character
	if _, err := PowerSubject(Location{Site: "dc.1", Hall: "h1", Row: "r", Rack: "k", Node: "n"}); err == nil {
		t.Error("PowerSubject accepted a '.' in a token")
	}
}
