package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// TestIngestInflux: reports → JetStream → ingest → influxd; every point,
// value, absent field and tag arrives exactly as produced.
func TestIngestInflux(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	natsURL, js := natsInProcess(t)

	const nodes, windows = 20, 5
	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	for w := range windows {
		for i := range nodes {
			publishReport(t, js, testReport(testLoc(i), uint64(w+1), end.Add(time.Duration(w)*time.Second), 8))
		}
	}
	logs := &logBuf{}
	t.Setenv("MW_TEST_TOKEN", "s3cr3t-token-value")
	cfg := testConfig(influx.URL, "mw")
	cfg.Targets[0].TokenEnv = "MW_TEST_TOKEN" // influxd 1.8 without auth ignores it
	cfg.EnsureDB = true
	in, _, _ := startIngest(t, cfg, natsURL, logs)
	waitFor(t, 30*time.Second, "all gpu points", func() bool {
		return influx.Count(t, "mw", `SELECT count(power_w) FROM gpu`) == nodes*windows*8
	})
	if err := in.Ready(); err != nil {
		t.Errorf("ready: %v", err)
	}
	if n := influx.Count(t, "mw", `SELECT count(gpus) FROM node`); n != nodes*windows {
		t.Errorf("node points: %d, want %d", n, nodes*windows)
	}
	// absent field stays absent: gpu 7 has no mem_temp_c.
	if n := influx.Count(t, "mw", `SELECT count(mem_temp_c) FROM gpu`); n != nodes*windows*7 {
		t.Errorf("mem_temp_c points: %d, want %d", n, nodes*windows*7)
	}
	// exact values and tags of one point.
	r := testReport(testLoc(3), 4, end.Add(3*time.Second), 8)
	s := influx.Query(t, "mw", fmt.Sprintf(`SELECT * FROM gpu WHERE node='%s' AND gpu='2' AND time = %d`, r.Node, r.WindowEndUnixNs))
	if len(s) != 1 || len(s[0].Values) != 1 {
		t.Fatalf("want one point, got %+v", s)
	}
	got := map[string]string{}
	for i, c := range s[0].Columns {
		if v := s[0].Values[0][i]; v != nil {
			got[c] = fmt.Sprint(v)
		}
	}
	g := r.Gpus[2]
	want := map[string]string{
		"time": fmt.Sprint(r.WindowEndUnixNs), "site": "dc1", "hall": r.Hall, "row": "r01", "rack": r.Rack, "node": r.Node, "gpu": "2",
		"power_w": fmt.Sprint(telemetry.MilliwattsToW(*g.PowerMw)), "power_min_w": fmt.Sprint(telemetry.MilliwattsToW(*g.PowerMinMw)),
		"power_max_w": fmt.Sprint(telemetry.MilliwattsToW(*g.PowerMaxMw)), "energy_mj": fmt.Sprint(*g.EnergyMj),
		"temp_c": "62", "mem_temp_c": "70", "power_limit_w": "700", "sm_clock_mhz": "1980", "util_pct": "90",
		"throttle_reasons": "4", "healthy": "true",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("columns %v, want %v", got, want)
	}
	// node power = sum over healthy GPUs, summed exactly in milliwatts.
	var sumMw uint32
	for _, g := range r.Gpus {
		sumMw += *g.PowerMw
	}
	sum := telemetry.MilliwattsToW(sumMw)
	ns := influx.Query(t, "mw", fmt.Sprintf(`SELECT power_w FROM node WHERE node='%s' AND time = %d`, r.Node, r.WindowEndUnixNs))
	if len(ns) != 1 || fmt.Sprint(ns[0].Values[0][1]) != fmt.Sprint(sum) {
		t.Errorf("node power_w: %+v, want %v", ns, sum)
	}
	if strings.Contains(logs.String(), "s3cr3t-token-value") {
		t.Error("the token appears in the logs")
	}
}

// TestRollupsAndAlerts: the rollup and alert measurements from MEGAWATCH_ROLLUP.
func TestRollupsAndAlerts(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	natsURL, js := natsInProcess(t)
	end := time.Now().Truncate(time.Second).Add(-time.Minute).UnixNano()
	osc := 0.5
	for i, path := range [][]string{{"dc1"}, {"dc1", "h1"}, {"dc1", "h1", "r01"}, {"dc1", "h1", "r01", "k01"}} {
		level := defaultLevels[len(path)-1]
		ro := &telemetry.Rollup{Level: level, Path: path, WindowEndUnixNs: end, PowerW: float64(i+1) * 1e6, PowerEstW: float64(i+1) * 1e6,
			PowerMaxW: 5e6, CapacityW: 10e6, NodesReporting: 3, NodesExpected: 4, OscFreqHz: &osc}
		subj, _ := telemetry.RollupSubject(level, path)
		publishRaw(t, js, subj, ro, "")
	}
	a := &telemetry.AlertEvent{Rule: "site_power", Severity: "page", Level: "site", Domain: "dc1", State: telemetry.AlertState_ALERT_STATE_FIRING,
		Value: 4, Threshold: 3.5, Message: "site over", AtUnixNs: end}
	subj, _ := telemetry.AlertSubject("page", "site_power")
	publishRaw(t, js, subj, a, "")
	startIngest(t, testConfig(influx.URL, "mw"), natsURL, nil)
	waitFor(t, 30*time.Second, "rollups and alert", func() bool {
		return influx.Count(t, "mw", `SELECT count(power_mw) FROM rollup`) == 4 && influx.Count(t, "mw", `SELECT count(value) FROM alert`) == 1
	})
	s := influx.Query(t, "mw", `SELECT power_mw, headroom_mw, coverage, osc_freq_hz, site, hall, row, rack FROM rollup WHERE level='row'`)
	if len(s) != 1 {
		t.Fatalf("row rollup: %+v", s)
	}
	row, _ := json.Marshal(s[0].Values[0][1:])
	if string(row) != `[3,7,0.75,0.5,"dc1","h1","r01",null]` {
		t.Errorf("row rollup = %s", row)
	}
	s = influx.Query(t, "mw", `SELECT state, value, threshold, message FROM alert WHERE rule='site_power' AND severity='page' AND domain='dc1'`)
	if len(s) != 1 {
		t.Fatalf("alert: %+v", s)
	}
	al, _ := json.Marshal(s[0].Values[0][1:])
	if string(al) != `["firing",4,3.5,"site over"]` {
		t.Errorf("alert = %s", al)
	}
}
