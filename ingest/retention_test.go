package ingest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// defaultTargetFor is the default config's target (README's retention
// advice) on database db at url.
func defaultTargetFor(url, db string) Target {
	t := DefaultConfig().Targets[0]
	t.Name, t.URL, t.Bucket, t.TokenEnv = "t", url, db+"/autogen", ""
	ms := map[string]string{}
	for m, b := range t.Measurements {
		ms[m] = db + "/" + strings.TrimPrefix(b, "megawatch/")
	}
	t.Measurements = ms
	return t
}

// TestRetentionPolicies: --ensure-db creates the default config's retention
// policies (gpu 7 days, node 30 days, rollups, alerts and meters a year) with their
// shard durations, SHOW RETENTION POLICIES matches the config, a second
// run (ALTER) changes nothing, and the points of each measurement land in
// their own policy and nowhere else.
func TestRetentionPolicies(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	natsURL, js := natsInProcess(t)
	cfg := testConfig(influx.URL, "mw")
	cfg.Targets = []Target{defaultTargetFor(influx.URL, "mw")}
	cfg.EnsureDB = true
	startIngest(t, cfg, natsURL, nil)
	waitFor(t, 30*time.Second, "retention policies", func() bool {
		_, err := influx.QueryErr("mw", `SELECT count(gpus) FROM "mw"."rollup_1y"."node"`)
		return err == nil
	})
	now := time.Now().Truncate(time.Second)
	for i := range 10 {
		publishReport(t, js, testReport(testLoc(i), 1, now.Add(-time.Minute), 8))
	}
	publishRollup(t, js, []string{"dc1", "h1"}, now.Add(-time.Minute))
	al := &telemetry.AlertEvent{Rule: "site_power", Severity: "page", Level: "site", Domain: "dc1", State: telemetry.AlertState_ALERT_STATE_FIRING, Value: 1, Threshold: 1, Message: "m", AtUnixNs: now.Add(-time.Minute).UnixNano()}
	subj, _ := telemetry.AlertSubject("page", "site_power")
	publishRaw(t, js, subj, al, "")
	mr := testMeter("pdu-a", now.Add(-time.Minute), 7000, "p")
	publishRaw(t, js, meterSubject(t, mr), mr, telemetry.MeterReportMsgID(mr))
	count := func(rp, meas, field string) int64 {
		return influx.Count(t, "mw", fmt.Sprintf(`SELECT count(%s) FROM "mw"."%s"."%s"`, field, rp, meas))
	}
	waitFor(t, 30*time.Second, "points in their policies", func() bool {
		return count("gpu_7d", "gpu", "power_w") == 80 && count("node_30d", "node", "gpus") == 10 &&
			count("rollup_1y", "rollup", "power_mw") == 1 && count("rollup_1y", "alert", "value") == 1 &&
			count("rollup_1y", "meter", "power_w") == 1
	})
	for _, wrong := range []struct{ rp, meas, field string }{
		{"autogen", "gpu", "power_w"}, {"autogen", "node", "gpus"}, {"autogen", "rollup", "power_mw"}, {"autogen", "alert", "value"}, {"autogen", "meter", "power_w"},
		{"node_30d", "gpu", "power_w"}, {"gpu_7d", "node", "gpus"}, {"rollup_1y", "gpu", "power_w"},
	} {
		if n := count(wrong.rp, wrong.meas, wrong.field); n != 0 {
			t.Errorf("%d %s points in %s", n, wrong.meas, wrong.rp)
		}
	}
	checkPolicies := func() {
		t.Helper()
		got := map[string]string{}
		for _, s := range influx.Query(t, "", `SHOW RETENTION POLICIES ON mw`) {
			for _, v := range s.Values {
				got[fmt.Sprint(v[0])] = fmt.Sprint(v[1]) + " " + fmt.Sprint(v[2])
			}
		}
		want := map[string]string{"autogen": "0s 168h0m0s", "gpu_7d": "168h0m0s 24h0m0s", "node_30d": "720h0m0s 24h0m0s", "rollup_1y": "8760h0m0s 168h0m0s"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("retention policies %v, want %v", got, want)
		}
	}
	checkPolicies()
	// Again (the policies exist: ALTER), after someone changed one.
	influx.Exec(t, "", `ALTER RETENTION POLICY "gpu_7d" ON "mw" DURATION 2d`)
	tg, err := newTarget(cfg.Targets[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.sink.ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkPolicies()
}

// TestEnsureDBMissingPolicy: a measurement routed to a retention policy
// that neither exists nor is configured stops --ensure-db with its name.
func TestEnsureDBMissingPolicy(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	cfg := testConfig(influx.URL, "mw")
	cfg.Targets[0].Measurements = map[string]string{"gpu": "mw/nope"}
	tg, err := newTarget(cfg.Targets[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = tg.sink.ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "mw/nope") {
		t.Errorf("ensure = %v, want an error naming mw/nope", err)
	}
}

// TestNewFieldsStored: node power (with its source), CPU power and node
// energy, a failed GPU's health kind and the rollup's stale_nodes,
// throttled_gpus, gpus, gpus_healthy and temperature maxima reach InfluxDB.
func TestNewFieldsStored(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	natsURL, js := natsInProcess(t)
	startIngest(t, testConfig(influx.URL, "mw"), natsURL, nil)
	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	r := testReport(testLoc(1), 1, end, 8)
	r.NodePowerMw, r.NodePowerSource, r.CpuPowerMw, r.NodeEnergyMj = u32(6_543_210), telemetry.NodePowerSource_NODE_POWER_HWMON, u32(700_500), u64(987654321)
	r.Gpus[2].Health, r.Gpus[2].PowerMw = telemetry.Health_HEALTH_TIMEOUT, nil
	r.Gpus[5].Health, r.Gpus[5].PowerMw = telemetry.Health_HEALTH_LOST, nil
	publishReport(t, js, r)
	tmax, mmax, delta := int32(83), int32(91), -2.5e5
	ro := &telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: end.UnixNano(), PowerW: 1e6, PowerEstW: 1e6, PowerMaxW: 1e6, CapacityW: 2e6,
		NodesReporting: 9, NodesExpected: 10, StaleNodes: 1, ThrottledGpus: 3, Gpus: 80, GpusHealthy: 78, GpuTempMaxC: &tmax, MemTempMaxC: &mmax,
		Degraded: true, PowerMaxEstW: 1.25e6, Coverage: 0.9, LagMs: 1500, ContinuityDeltaW: &delta}
	subj, _ := telemetry.RollupSubject("hall", ro.Path)
	publishRaw(t, js, subj, ro, "")
	waitFor(t, 30*time.Second, "points", func() bool {
		return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) == 1 && influx.Count(t, "mw", `SELECT count(power_mw) FROM rollup`) == 1
	})
	row := func(q string) string {
		s := influx.Query(t, "mw", q)
		if len(s) == 0 || len(s[0].Values) == 0 {
			return ""
		}
		return fmt.Sprint(s[0].Values[0][1:])
	}
	if got := row(`SELECT node_power_w, node_power_source, cpu_power_w, node_energy_mj FROM node`); got != "[6543.21 hwmon 700.5 987654321]" {
		t.Errorf("node power fields %s", got)
	}
	if got := row(`SELECT count(health) FROM gpu WHERE health = 'timeout'`); got != "[1]" {
		t.Errorf("timeout gpus %s", got)
	}
	if got := row(`SELECT count(health) FROM gpu WHERE health = 'lost'`); got != "[1]" {
		t.Errorf("lost gpus %s", got)
	}
	if got := row(`SELECT stale_nodes, throttled_gpus, gpus, gpus_healthy, gpu_temp_max_c, mem_temp_max_c FROM rollup`); got != "[1 3 80 78 83 91]" {
		t.Errorf("rollup fields %s", got)
	}
	// The aggregator's missing-data fields; headroom is capacity − estimate.
	if got := row(`SELECT degraded, power_max_est_mw, lag_ms, continuity_delta_mw, headroom_mw FROM rollup`); got != "[true 1.25 1500 -0.25 1]" {
		t.Errorf("rollup missing-data fields %s", got)
	}
}
