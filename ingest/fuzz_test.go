package ingest

import (
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// FuzzEncode: an arbitrary report, rollup or alert (kind 0, 1, 2) either
// fails a check or encoding — and is dead-lettered — or becomes lines that
// InfluxDB's parser reads back completely. A report's lines are also
// exactly what line-protocol/v2's Encoder alone writes (refReport).
func FuzzEncode(f *testing.F) {
	end := time.Unix(1_700_000_000, 0)
	r, _ := proto.Marshal(testReport(testLoc(1), 7, end, 8))
	f.Add(uint8(0), r)
	osc := 1.5
	ro, _ := proto.Marshal(&telemetry.Rollup{Level: "rack", Path: []string{"dc1", "h1", "r01", "k01"}, WindowEndUnixNs: end.UnixNano(), PowerW: 3e4, CapacityW: 4e4, OscFreqHz: &osc})
	f.Add(uint8(1), ro)
	fr, _ := proto.Marshal(facilityRollup(end))
	f.Add(uint8(1), fr)
	al, _ := proto.Marshal(&telemetry.AlertEvent{Rule: "r", Severity: "page", Level: "hall", Domain: "dc1/h1", Message: "x=1, \"y\"", AtUnixNs: end.UnixNano()})
	f.Add(uint8(2), al)
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		e := newLPEncoder(defaultLevels)
		var n int
		var err error
		switch kind % 3 {
		case 0:
			var r telemetry.NodeReport
			if proto.Unmarshal(data, &r) != nil {
				return // dead-lettered: decode
			}
			subj, serr := telemetry.PowerSubject(telemetry.ReportLocation(&r))
			if serr != nil {
				return // cannot have been published on a valid subject
			}
			if checkReport(subj, &r, time.Unix(0, r.WindowEndUnixNs), timeWindow{maxAge: time.Hour, skew: time.Minute}, nil) != nil {
				return // dead-lettered
			}
			checkSameAsLibrary(t, &r)
			n, err = e.report(&r, true)
		case 1:
			var r telemetry.Rollup
			if proto.Unmarshal(data, &r) != nil {
				return
			}
			subj, serr := telemetry.RollupSubject(r.Level, r.Path)
			if serr != nil {
				return
			}
			level, path, perr := telemetry.ParseRollupSubject(subj)
			if perr != nil {
				t.Fatalf("subject %q from RollupSubject does not parse: %v", subj, perr)
			}
			if checkRollup(level, path, &r, time.Unix(0, r.WindowEndUnixNs), timeWindow{maxAge: time.Hour, skew: time.Minute}, len(defaultLevels)) != nil {
				return
			}
			n, err = e.rollup(level, path, &r)
		case 2:
			var a telemetry.AlertEvent
			if proto.Unmarshal(data, &a) != nil {
				return
			}
			subj, serr := telemetry.AlertSubject(a.Severity, a.Rule)
			if serr != nil {
				return
			}
			sev, rule, perr := parseAlertSubject(subj)
			if perr != nil {
				t.Fatalf("subject %q from AlertSubject does not parse: %v", subj, perr)
			}
			if checkAlert(sev, rule, &a, time.Unix(0, a.AtUnixNs), timeWindow{maxAge: time.Hour, skew: time.Minute}) != nil {
				return
			}
			n, err = e.alert(sev, rule, &a)
		}
		if err != nil {
			if len(e.buf()) != 0 {
				t.Fatalf("failed encode left %q", e.buf())
			}
			return // dead-lettered: encode
		}
		if got := countParsed(t, e.buf()); got != n {
			t.Fatalf("encoded %d lines, parser read %d: %q", n, got, e.buf())
		}
	})
}
