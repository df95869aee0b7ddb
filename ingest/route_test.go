package ingest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
)

// TestTargets: hall h1 goes to its own bucket, everything else to another,
// and rollups/alerts to a line-protocol file.
func TestTargets(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw_h1")
	influx.CreateDB(t, "mw_rest")
	natsURL, js := natsInProcess(t)
	file := filepath.Join(t.TempDir(), "rollups.lp")
	cfg := testConfig(influx.URL, "unused")
	cfg.Targets = []Target{
		{Name: "h1", Subjects: []string{"megawatch.v1.power.*.h1.>"}, URL: influx.URL, Bucket: "mw_h1/autogen"},
		{Name: "rollups", Subjects: []string{"megawatch.v1.rollup.>", "megawatch.v1.alert.>"}, File: file},
		{Name: "rest", URL: influx.URL, Bucket: "mw_rest"},
	}
	s := newStream(10, 3)
	s.publish(t, js, 0, nil)
	publishRollup(t, js, []string{"dc1", "h1"}, time.Now().Add(-time.Minute))
	startIngest(t, cfg, natsURL, nil)
	waitFor(t, 30*time.Second, "both buckets", func() bool {
		return influx.Count(t, "mw_h1", `SELECT count(gpus) FROM node`) == 15 && influx.Count(t, "mw_rest", `SELECT count(gpus) FROM node`) == 15
	})
	if s := influx.Query(t, "mw_h1", `SHOW TAG VALUES FROM node WITH KEY = "hall"`); len(s) != 1 || len(s[0].Values) != 1 || s[0].Values[0][1] != "h1" {
		t.Errorf("mw_h1 halls: %+v", s)
	}
	waitFor(t, 10*time.Second, "rollup in the file", func() bool {
		b, _ := os.ReadFile(file)
		return strings.HasPrefix(string(b), "rollup,hall=h1,level=hall,site=dc1 ")
	})
}

// TestGPUEvery: gpu_every 5 writes one gpu point per 5 windows with the
// energy-weighted mean power; node points stay at full resolution.
func TestGPUEvery(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	natsURL, js := natsInProcess(t)
	s := newStream(4, 10)
	s.base = time.Now().Truncate(5 * time.Second).Add(-10 * time.Minute)
	s.publish(t, js, 0, nil)
	cfg := testConfig(influx.URL, "mw")
	cfg.GPUEvery = 5
	cfg.Workers = 1 // in order: a late window would join the next group
	startIngest(t, cfg, natsURL, nil)
	waitFor(t, 30*time.Second, "points", func() bool {
		return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) == 40 && influx.Count(t, "mw", `SELECT count(power_w) FROM gpu`) == 4*2*8
	})
	got := influx.Query(t, "mw", fmt.Sprintf(`SELECT power_w, power_min_w, power_max_w, energy_mj FROM gpu WHERE node='%s' AND gpu='1'`, testLoc(0).Node))
	if len(got) != 1 || len(got[0].Values) != 2 {
		t.Fatalf("gpu points: %+v", got)
	}
	// seq 1..5: power 501.001..501.005 W → mean 501.003; min of mins, max of maxes, last counter.
	want := [][]string{
		{fmt.Sprint(s.base.Add(5 * time.Second).UnixNano()), "501.003", "401.001", "601.005", "5001"},
		{fmt.Sprint(s.base.Add(10 * time.Second).UnixNano()), "501.008", "401.006", "601.01", "10001"},
	}
	for i, row := range got[0].Values {
		for j, v := range row {
			if fmt.Sprint(v) != want[i][j] {
				t.Errorf("point %d column %s = %v, want %s", i, got[0].Columns[j], v, want[i][j])
			}
		}
	}
}
