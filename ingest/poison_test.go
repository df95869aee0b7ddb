package ingest

import (
	"context"
	"math"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
)

// deadLetters returns "reason subject" of every message in MEGAWATCH_DEADLETTER.
func deadLetters(t testing.TB, js jetstream.JetStream) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, telemetry.StreamDeadLetter, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		b, err := c.Fetch(100, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			h := m.Headers()
			if !strings.HasSuffix(m.Subject(), "."+h.Get(telemetry.HeaderDeadReason)) {
				t.Errorf("dead letter subject %s, reason header %s", m.Subject(), h.Get(telemetry.HeaderDeadReason))
			}
			out = append(out, h.Get(telemetry.HeaderDeadReason)+" "+h.Get(telemetry.HeaderDeadFrom))
			if h.Get(telemetry.HeaderDeadReason) == ReasonConflict && !strings.Contains(h.Get(telemetry.HeaderDeadError), "ingest writes float, InfluxDB has string") {
				t.Errorf("rejected message's error header %q lacks InfluxDB's text", h.Get(telemetry.HeaderDeadError))
			}
		}
		if n == 0 {
			sort.Strings(out)
			return out
		}
	}
}

// TestPoison: random bytes, a report from the wrong location, a timestamp a
// day ahead, NaN power and a field type conflict are dead-lettered with
// their reason; every good message around them is written.
func TestPoison(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.Exec(t, "", `CREATE DATABASE mw WITH SHARD DURATION 1h`)
	natsURL, js := natsInProcess(t)
	now := time.Now().Truncate(time.Second)
	old := now.Add(-5 * time.Hour)
	// A string power_w in the shard of `old`: any float power_w there conflicts.
	resp, err := http.Post(influx.URL+"/write?db=mw", "text/plain", strings.NewReader("gpu,gpu=0,hall=h1,node=x,rack=k,row=r,site=dc1 power_w=\"bad\" "+itoa(old.Truncate(time.Hour).UnixNano())+"\n"))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("seed conflict: %v %v", err, resp)
	}
	const good = 30
	for i := range good {
		r := testReport(testLoc(i), 1, now.Add(-time.Minute), 8)
		publishReport(t, js, r)
		switch i {
		case 5:
			publishBytes(t, js, "megawatch.v1.power.dc1.h1.r01.k01.junk", []byte{0xff, 0x01, 0x02, 0x8a, 0x99, 0x07}, "")
		case 6:
			full, _ := protoMarshal(testReport(testLoc(6), 2, now.Add(-time.Minute), 8))
			publishBytes(t, js, "megawatch.v1.power.dc1.h1.r01.k02", full, "") // 4 tokens
			publishBytes(t, js, "megawatch.v1.power.dc1.h1.r01.k01.empty", nil, "")
		case 10:
			liar := testReport(testLoc(11), 1, now.Add(-time.Minute), 8)
			data, _ := protoMarshal(liar)
			publishBytes(t, js, mustPowerSubject(testLoc(12)), data, "")
		case 15:
			publishReport(t, js, testReport(telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "future"}, 1, now.Add(24*time.Hour), 8))
		case 20:
			nan := math.NaN()
			ro := &telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: now.UnixNano(), PowerW: nan, CapacityW: 1e6, RampWPerS: &nan}
			subj, _ := telemetry.RollupSubject("hall", []string{"dc1", "h1"})
			publishRaw(t, js, subj, ro, "")
		case 25:
			publishReport(t, js, testReport(telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "conflict"}, 1, old, 8))
		}
	}
	ro := &telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: now.UnixNano(), PowerW: 1e6, CapacityW: 2e6}
	subj, _ := telemetry.RollupSubject("hall", []string{"dc1", "h1"})
	publishRaw(t, js, subj, ro, "")

	cfg := testConfig(influx.URL, "mw")
	cfg.BatchLines = 100 // several batches, so the conflict is split out of a real batch
	// InfluxDB 1.8 without auth: an unset token env var is no token, not an error.
	cfg.Targets[0].TokenEnv = "MEGAWATCH_TEST_TOKEN_NOT_SET"
	startIngest(t, cfg, natsURL, nil)
	want := []string{
		"conflict megawatch.v1.power.dc1.h1.r01.k01.conflict",
		"decode megawatch.v1.power.dc1.h1.r01.k01.empty",
		"decode megawatch.v1.power.dc1.h1.r01.k01.junk",
		"location " + mustPowerSubject(testLoc(12)),
		"subject megawatch.v1.power.dc1.h1.r01.k02",
		"timestamp megawatch.v1.power.dc1.h1.r01.k01.future",
		"value megawatch.v1.rollup.hall.dc1.h1",
	}
	waitFor(t, 30*time.Second, "good points and dead letters", func() bool {
		return influx.Count(t, "mw", `SELECT count(power_w) FROM gpu WHERE time > now() - 1h`) == good*8 &&
			influx.Count(t, "mw", `SELECT count(power_mw) FROM rollup`) == 1 && len(deadLetters(t, js)) >= len(want)
	})
	got := deadLetters(t, js)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("dead letters:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := influx.Count(t, "mw", `SELECT count(gpus) FROM node WHERE time > now() - 1h`); n != good {
		t.Errorf("node points %d, want %d", n, good)
	}
	// The conflicting report's node point is not in conflict: written.
	if n := influx.Count(t, "mw", `SELECT count(gpus) FROM node WHERE node = 'conflict'`); n != 1 {
		t.Errorf("conflicting report's node points %d, want 1", n)
	}
}

func mustPowerSubject(l telemetry.Location) string {
	s, err := telemetry.PowerSubject(l)
	if err != nil {
		panic(err)
	}
	return s
}
