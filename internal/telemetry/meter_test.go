package telemetry

import (
	"slices"
	"testing"
)

func TestMeterSubjectRoundTrip(t *testing.T) {
	f := func(path []string, meter, want string) {
		t.Helper()
		got, err := MeterSubject(path, meter)
		if err != nil || got != want {
			t.Fatalf("MeterSubject(%v, %q) = %q, %v; want %q", path, meter, got, err, want)
		}
		p, m, err := ParseMeterSubject(got)
		if err != nil || m != meter || !slices.Equal(p, path) {
			t.Fatalf("ParseMeterSubject(%q) = %v, %q, %v", got, p, m, err)
		}
	}
	f([]string{"dc1", "h1", "r01", "rk01"}, "pdu-r01-rk01-a", "megawatch.v1.meter.dc1.h1.r01.rk01.pdu-r01-rk01-a")
	f([]string{"dc1", "h1"}, "swgr-h1", "megawatch.v1.meter.dc1.h1.swgr-h1")
	f([]string{"dc1"}, "utility", "megawatch.v1.meter.dc1.utility")

	for _, bad := range []struct {
		path  []string
		meter string
	}{{nil, "m"}, {[]string{"dc1"}, ""}, {[]string{"dc1"}, "a.b"}, {[]string{"d c"}, "m"}, {[]string{"dc1", "*"}, "m"}} {
		if s, err := MeterSubject(bad.path, bad.meter); err == nil {
			t.Errorf("MeterSubject(%v, %q) = %q, want an error", bad.path, bad.meter, s)
		}
	}
	for _, bad := range []string{"megawatch.v1.meter.dc1", "megawatch.v1.power.dc1.m", "megawatch.v1.meter..m", "megawatch.v1.meter.dc1.*"} {
		if _, _, err := ParseMeterSubject(bad); err == nil {
			t.Errorf("ParseMeterSubject(%q): want an error", bad)
		}
	}
}

func TestMeterMsgID(t *testing.T) {
	if got := MeterMsgID("pdu-a", 1_700_000_001_999_999_999); got != "meter:pdu-a:1700000001999" {
		t.Fatalf("MeterMsgID = %q", got)
	}
	if got := MeterReportMsgID(&MeterReport{Meter: "pdu-a", WindowEndUnixNs: 2e9, Stale: true}); got != "meter:pdu-a:2000:stale" {
		t.Fatalf("stale msg id %q", got)
	}
	if got := MeterReportMsgID(&MeterReport{Meter: "pdu-a", WindowEndUnixNs: 2e9}); got != "meter:pdu-a:2000" {
		t.Fatalf("fresh msg id %q", got)
	}
	// Not the node id space: a meter named like a node gets another id.
	if MeterMsgID("n1", 5e9) == MsgID("n1", 5e9) {
		t.Fatal("meter and node msg ids collide")
	}
}

func FuzzParseMeterSubject(f *testing.F) {
	f.Add("megawatch.v1.meter.dc1.h1.r01.rk01.pdu-a")
	f.Add("megawatch.v1.meter.dc1.x")
	f.Add("megawatch.v1.meter.")
	f.Fuzz(func(t *testing.T, s string) {
		path, meter, err := ParseMeterSubject(s)
		if err != nil {
			return
		}
		back, err := MeterSubject(path, meter)
		if err != nil || back != s {
			t.Fatalf("round trip %q -> %v %q -> %q, %v", s, path, meter, back, err)
		}
	})
}
