package collector

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/obs"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fastConfig is a collector with 200 ms windows of 20 ms slots.
func fastConfig() Config {
	c := testConfig()
	c.Window, c.Slot, c.CallTimeout = 200*time.Millisecond, 20*time.Millisecond, 100*time.Millisecond
	c.AckTimeout = time.Second
	c.FlushTimeout = time.Second
	return c
}

// setupStream starts an in-process server with the power stream.
func setupStream(t *testing.T) *natstest.Server {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.URL())
	if _, err := natsx.EnsureStream(context.Background(), natstest.JetStream(t, nc), natsx.DefaultStreamsConfig().PowerStream()); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	return srv
}

// collectorConn connects like the binary does (reconnect forever, no
// nats.go reconnect buffer), with a short backoff cap.
func collectorConn(t *testing.T, url string) *nats.Conn {
	t.Helper()
	cfg := natsx.Config{Servers: []string{url}, ReconnectWaitMax: 300 * time.Millisecond}
	nc, err := natsx.Connect(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type running struct {
	c      *Collector
	cancel context.CancelFunc
	done   chan error
}

func startCollector(t *testing.T, cfg Config, dev *mockNode, nc *nats.Conn) *running {
	t.Helper()
	c, err := New(cfg, dev, testLoc, nc, testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// streamReports returns every report in MEGAWATCH_POWER in stream order.
func streamReports(t *testing.T, url string) []*telemetry.NodeReport {
	t.Helper()
	nc := natstest.Connect(t, url)
	defer nc.Close()
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, telemetry.StreamPower)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*telemetry.NodeReport
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		var r telemetry.NodeReport
		if err := proto.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("stream seq %d does not decode: %v", seq, err)
		}
		if got, want := m.Header.Get(jetstream.MsgIDHeader), telemetry.MsgID(r.Node, r.WindowEndUnixNs); got != want {
			t.Errorf("stream seq %d: Nats-Msg-Id %q, want %q", seq, got, want)
		}
		if m.Header.Get(telemetry.HeaderSchema) != telemetry.SchemaVersion {
			t.Errorf("stream seq %d: no schema header", seq)
		}
		out = append(out, &r)
	}
	return out
}

// waitFor polls cond (not a timing assertion: it bounds how long the test
// waits for an outcome).
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func streamCount(t *testing.T, url string) uint64 {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, telemetry.StreamPower)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// checkExactlyOnce asserts that reports of one boot have seq 1..n in order
// with no gap and no duplicate.
func checkExactlyOnce(t *testing.T, reps []*telemetry.NodeReport) {
	t.Helper()
	for i, r := range reps {
		if r.Seq != uint64(i+1) {
			t.Fatalf("stream position %d holds seq %d, want %d (gap, duplicate or reorder)", i, r.Seq, i+1)
		}
		if i > 0 && r.WindowEndUnixNs <= reps[i-1].WindowEndUnixNs {
			t.Fatalf("seq %d: window end not after the previous one", r.Seq)
		}
	}
}

func TestPublishSurvivesNATSOutage(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	dev := newMockNode(time.Now)
	run := startCollector(t, fastConfig(), dev, collectorConn(t, srv.URL()))

	waitFor(t, "reports before the outage", 20*time.Second, func() bool { return streamCount(t, srv.URL()) >= 10 })
	srv.Stop()
	downAt := time.Now()
	// The outage lasts 140 of the collector's windows (about 30 s of 200 ms
	// windows), counted by the collector itself rather than by the wall
	// clock: a starved process makes fewer windows in 30 s, and the test is
	// about what happens to the windows it made.
	windowsAtStop := counterValue(t, run.c.m.windows)
	waitFor(t, "140 windows during the outage", 3*time.Minute, func() bool {
		return counterValue(t, run.c.m.windows) >= windowsAtStop+140
	})
	upAt := time.Now()
	windowsAtRestart := counterValue(t, run.c.m.windows)
	srv.Restart()
	waitFor(t, "the buffer to drain", time.Minute, func() bool {
		return run.c.Ready() == nil && counterValue(t, run.c.m.buffered) == 0 && counterValue(t, run.c.m.replayed) > 0
	})
	liveFrom := counterValue(t, run.c.m.windows)
	waitFor(t, "live reports after the replay", time.Minute, func() bool {
		return counterValue(t, run.c.m.windows) >= liveFrom+5
	})
	run.stop(t)

	reps := streamReports(t, srv.URL())
	checkExactlyOnce(t, reps)
	if n := len(reps); float64(n) < windowsAtRestart {
		t.Fatalf("%d reports in the stream, want >= %v (every window made until the restart)", n, windowsAtRestart)
	}
	var during, live int
	for _, r := range reps {
		end := time.Unix(0, r.WindowEndUnixNs)
		switch {
		case end.After(downAt.Add(time.Second)) && end.Before(upAt):
			during++
			if !r.Replayed {
				t.Errorf("seq %d (window end %s, during the outage) not flagged replayed", r.Seq, end.Format(time.StampMilli))
			}
		case !r.Replayed:
			live++
		}
		if len(r.Gpus) != 8 {
			t.Errorf("seq %d: %d GPUs", r.Seq, len(r.Gpus))
		}
	}
	// All but the windows of the outage's first second (at most 5, plus one
	// a starved sampler may have been late with) are strictly inside it.
	if during < 134 || live < 5 {
		t.Errorf("%d reports from the outage, %d live; want >= 134 and >= 5", during, live)
	}
	if d := counterValue(t, run.c.m.dropped); d != 0 {
		t.Errorf("%v reports dropped", d)
	}
}

func TestBufferBoundDropsOldest(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	cfg := fastConfig()
	cfg.Window, cfg.Slot, cfg.CallTimeout = 100*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	cfg.BufferMax = 5
	run := startCollector(t, cfg, newMockNode(time.Now), collectorConn(t, srv.URL()))

	waitFor(t, "reports before the outage", 20*time.Second, func() bool { return streamCount(t, srv.URL()) >= 5 })
	srv.Stop()
	windowsAtStop := counterValue(t, run.c.m.windows)
	waitFor(t, "reports beyond the bound", 30*time.Second, func() bool {
		return counterValue(t, run.c.m.windows) >= windowsAtStop+20
	})
	srv.Restart()
	waitFor(t, "the buffer to drain", 30*time.Second, func() bool {
		return counterValue(t, run.c.m.buffered) == 0 && counterValue(t, run.c.m.replayed) >= 5
	})
	run.stop(t)

	reps := streamReports(t, srv.URL())
	dropped := counterValue(t, run.c.m.dropped)
	if dropped < 15 {
		t.Fatalf("dropped %v, want >= 15", dropped)
	}
	// Exactly one gap, as wide as the drop count, and the newest buffered
	// reports right after it.
	gaps, missing := 0, 0
	for i := 1; i < len(reps); i++ {
		if d := int(reps[i].Seq) - int(reps[i-1].Seq); d != 1 {
			if d < 1 {
				t.Fatalf("seq %d after %d: duplicate or reorder", reps[i].Seq, reps[i-1].Seq)
			}
			gaps++
			missing += d - 1
			// The reports right after the gap are the newest buffered ones.
			for _, r := range reps[i : i+cfg.BufferMax] {
				if !r.Replayed {
					t.Errorf("seq %d after the gap not replayed", r.Seq)
				}
			}
		}
	}
	if reps[0].Seq != 1 || gaps != 1 || float64(missing) != dropped {
		t.Errorf("first seq %d, %d gaps, %d missing; want 1, one gap, %v missing (the drop count)", reps[0].Seq, gaps, missing, dropped)
	}
}

func TestDiskBufferSurvivesRestart(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	srv.Stop()
	cfg := fastConfig()
	cfg.Window, cfg.Slot, cfg.CallTimeout = 100*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	cfg.BufferDir = t.TempDir()
	cfg.FlushTimeout = 100 * time.Millisecond

	first := startCollector(t, cfg, newMockNode(time.Now), collectorConn(t, srv.URL()))
	waitFor(t, "reports while NATS is down", 20*time.Second, func() bool { return counterValue(t, first.c.m.windows) >= 10 })
	first.stop(t)
	n1 := int(counterValue(t, first.c.m.windows))

	srv.Restart()
	second := startCollector(t, cfg, newMockNode(time.Now), collectorConn(t, srv.URL()))
	waitFor(t, "the old reports and new ones", 20*time.Second, func() bool {
		return counterValue(t, second.c.m.published) >= float64(n1+5)
	})
	second.stop(t)

	reps := streamReports(t, srv.URL())
	if len(reps) < n1 {
		t.Fatalf("%d reports, want the %d of the first process and more", len(reps), n1)
	}
	old, rest := reps[:n1], reps[n1:]
	checkExactlyOnce(t, old)
	for _, r := range old {
		if r.BootId != old[0].BootId || !r.Replayed {
			t.Fatalf("first process's seq %d: boot %d replayed %v", r.Seq, r.BootId, r.Replayed)
		}
	}
	checkExactlyOnce(t, rest)
	if rest[0].BootId == old[0].BootId {
		t.Error("second process has the same boot_id")
	}
}

func TestHungGPUOthersReportOnTime(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	cfg := fastConfig()
	cfg.Window, cfg.Slot, cfg.CallTimeout = 500*time.Millisecond, 50*time.Millisecond, 250*time.Millisecond
	dev := newMockNode(time.Now)
	run := startCollector(t, cfg, dev, collectorConn(t, srv.URL()))
	waitFor(t, "reports before the hang", 20*time.Second, func() bool { return streamCount(t, srv.URL()) >= 2 })
	hang := make(chan struct{})
	dev.mu.Lock()
	dev.hang[3] = hang
	dev.mu.Unlock()
	hungFrom := time.Now()
	callsAtHang := dev.powerCalls[3].Load()
	waitFor(t, "reports during the hang", 30*time.Second, func() bool {
		return counterValue(t, run.c.m.published) >= 10
	})
	run.stop(t)
	// No new call went to the hung GPU while its call was stuck.
	if n := dev.powerCalls[3].Load() - callsAtHang; n > 1 {
		t.Errorf("%d power reads issued to the hung GPU, want 1 (the hung one)", n)
	}
	close(hang)

	timeouts := 0
	for _, r := range streamReports(t, srv.URL()) {
		if time.Unix(0, r.WindowEndUnixNs).Before(hungFrom.Add(time.Second)) {
			continue
		}
		if g := r.Gpus[3]; g.Health == telemetry.Health_HEALTH_TIMEOUT && g.PowerMw == nil {
			timeouts++
		} else {
			t.Errorf("seq %d: hung GPU reported %v", r.Seq, g)
		}
		for _, i := range except(3) {
			g := r.Gpus[i]
			p := float64(gpuPowerMW(i))
			if g.Health != telemetry.Health_HEALTH_OK || g.PowerMw == nil || float64(*g.PowerMw) < 0.98*p || float64(*g.PowerMw) > 1.02*p || g.TempC == nil {
				t.Errorf("seq %d gpu %d: %v", r.Seq, i, g)
			}
		}
	}
	if timeouts < 5 {
		t.Errorf("%d reports with the hung GPU, want >= 5", timeouts)
	}
}

// TestCollectorOnSimulator runs the collector on collector/sim with faults
// injected by the simulator: a lost GPU and an unsupported field.
func TestCollectorOnSimulator(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	cfg := fastConfig()
	cfg.Sim.Faults = []sim.Fault{
		{Kind: sim.FaultLost, GPU: 2},
		{Kind: sim.FaultNotSupported, GPU: 4, Field: sim.FieldMemTemp},
	}
	dev, err := sim.New(cfg.Sim, testLoc, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	reg := obs.NewRegistry()
	c, err := New(cfg, dev, testLoc, collectorConn(t, srv.URL()), testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	addr, err := obs.Serve(ctx, "127.0.0.1:0", obs.Mux(reg, c.Ready), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reports", 20*time.Second, func() bool { return counterValue(t, c.m.published) >= 5 })
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	_, body := httpGet(t, "http://"+addr+"/metrics")
	for _, want := range []string{
		`megawatch_collector_samples_total{node="gpu-h1-r01-rk01-n01"}`,
		`megawatch_collector_nvml_errors_total{gpu="2",kind="lost",node="gpu-h1-r01-rk01-n01"}`,
		`megawatch_collector_nvml_call_seconds_bucket{node="gpu-h1-r01-rk01-n01",le="0.001"}`,
		`megawatch_collector_nvml_call_duration_seconds_count{call="power_instant"`,
		`megawatch_collector_reports_published_total`, `megawatch_collector_reports_buffered`,
		`megawatch_collector_reports_dropped_total`, `megawatch_collector_publish_seconds_bucket`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	reps := streamReports(t, srv.URL())
	checkExactlyOnce(t, reps)
	for _, r := range reps {
		var sumMW uint64
		for _, g := range r.Gpus {
			switch g.Index {
			case 2:
				if g.Health != telemetry.Health_HEALTH_LOST || g.PowerMw != nil {
					t.Errorf("seq %d: lost GPU reported %v", r.Seq, g)
				}
				continue
			case 4:
				if g.MemTempC != nil || g.TempC == nil {
					t.Errorf("seq %d: unsupported mem temp present or temp missing: %v", r.Seq, g)
				}
			}
			if g.Health != telemetry.Health_HEALTH_OK || g.PowerMw == nil || g.EnergyMj == nil {
				t.Errorf("seq %d gpu %d: %v", r.Seq, g.Index, g)
			}
			sumMW += uint64(g.GetPowerMw())
		}
		// The slot vector sums the seven healthy GPUs: its mean is close to
		// the sum of their energy-derived means.
		var slots uint64
		for _, w := range r.SlotPowerW {
			slots += uint64(w)
		}
		mean := float64(slots) / float64(len(r.SlotPowerW))
		if sumW := float64(sumMW) / 1000; sumW < 100 || mean < 0.8*sumW || mean > 1.2*sumW {
			t.Errorf("seq %d: slot mean %.0f W vs GPU sum %.0f W", r.Seq, mean, sumW)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
