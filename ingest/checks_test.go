package ingest

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// TestImplausibleDeadLettered: the values an outside fault-injection test
// got into InfluxDB — a GPU at 4,294,967.295 W (wrapped uint32), the 8-GPU
// node it made 4,298,224.755 W, a 10,000,000 W slot, an int64 −1000 read
// as uint32 milliwatts (4,294,966.296 W) — and a wrapped node power are
// dead-lettered as implausible; none of their points reaches InfluxDB, and
// every plausible report around them is written.
func TestImplausibleDeadLettered(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.Exec(t, "", `CREATE DATABASE mw`)
	natsURL, js := natsInProcess(t)
	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	bad := map[string]func(r *telemetry.NodeReport){
		"wrapped": func(r *telemetry.NodeReport) { r.Gpus[3].PowerMw = u32(0xffffffff) },
		"node4298k": func(r *telemetry.NodeReport) {
			r.Gpus[0].PowerMw = u32(0xffffffff)
			for _, g := range r.Gpus[1:] {
				g.PowerMw = u32(465_351)
			}
		},
		"slot10mw": func(r *telemetry.NodeReport) { r.SlotPowerW[4] = 10_000_000 },
		"minus1000": func(r *telemetry.NodeReport) {
			v := int64(-1000)
			r.Gpus[5].PowerMw = u32(uint32(v))
		},
		"nodepower": func(r *telemetry.NodeReport) {
			r.NodePowerMw, r.NodePowerSource = u32(0xffffffff), telemetry.NodePowerSource_NODE_POWER_REDFISH
		},
	}
	var want []string
	const good = 20
	for i := range good - 1 {
		publishReport(t, js, testReport(testLoc(i), 1, end, 8))
	}
	for name, mutate := range bad {
		r := testReport(telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: name}, 1, end, 8)
		mutate(r)
		publishReport(t, js, r)
		want = append(want, ReasonImplausible+" "+mustPowerSubject(telemetry.ReportLocation(r)))
	}
	// Forged Msg-Ids: another window's id (it would make JetStream drop
	// that window's report), another node's. A re-published report's
	// nonce id is fine.
	forgedLoc := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "forger"}
	fr := testReport(forgedLoc, 1, end, 8)
	data, _ := protoMarshal(fr)
	publishBytes(t, js, mustPowerSubject(forgedLoc), data, telemetry.MsgID("forger", end.Add(time.Second).UnixNano()))
	publishBytes(t, js, mustPowerSubject(forgedLoc), data, telemetry.MsgID("n9999", end.UnixNano())) // (n0001's own id would be dropped by dedup: the attack itself)
	want = append(want, ReasonForgedID+" "+mustPowerSubject(forgedLoc), ReasonForgedID+" "+mustPowerSubject(forgedLoc))
	renonce := testReport(testLoc(good), 1, end, 8)
	data, _ = protoMarshal(renonce)
	publishBytes(t, js, mustPowerSubject(testLoc(good)), data, telemetry.MsgID(renonce.Node, end.UnixNano())+":0123456789abcdef")
	startIngest(t, testConfig(influx.URL, "mw"), natsURL, nil)
	waitFor(t, 30*time.Second, "good points and dead letters", func() bool {
		return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) == good && len(deadLetters(t, js)) >= len(want)
	})
	got := deadLetters(t, js)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("dead letters:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := influx.Count(t, "mw", `SELECT count(power_w) FROM gpu`); n != good*8 {
		t.Errorf("gpu points %d, want %d", n, good*8)
	}
	if n := influx.Count(t, "mw", `SELECT count(power_w) FROM gpu WHERE power_w > 10000`); n != 0 {
		t.Errorf("%d implausible gpu points written", n)
	}
	if n := influx.Count(t, "mw", `SELECT count(power_w) FROM node WHERE power_w > 100000`); n != 0 {
		t.Errorf("%d implausible node points written", n)
	}
}
