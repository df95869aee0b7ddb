package nodepower

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSource answers with fn; calls counts the reads.
type fakeSource struct {
	name  string
	kind  telemetry.NodePowerSource
	calls atomic.Int64
	fn    func(ctx context.Context) (Sample, error)
}

func (f *fakeSource) Name() string                    { return f.name }
func (f *fakeSource) Kind() telemetry.NodePowerSource { return f.kind }
func (f *fakeSource) Read(ctx context.Context) (Sample, error) {
	f.calls.Add(1)
	return f.fn(ctx)
}

func constSource(name string, kind telemetry.NodePowerSource, w float64) *fakeSource {
	return &fakeSource{name: name, kind: kind, fn: func(context.Context) (Sample, error) { return Sample{PowerW: w}, nil }}
}

func failing(name string, err error) *fakeSource {
	return &fakeSource{name: name, kind: telemetry.NodePowerSource_NODE_POWER_REDFISH, fn: func(context.Context) (Sample, error) { return Sample{}, err }}
}

var h100GPUs = GPUs{Count: 8, SumMW: 8 * 600_000, AllOK: true, ModelID: "NVIDIA H100 80GB HBM3"}

func newTestPoller(t *testing.T, cfg Config, window time.Duration, reg prometheus.Registerer, opts ...Option) *Poller {
	t.Helper()
	p, err := New(cfg, window, "n1", nil, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWindowFreshnessAndOrder(t *testing.T) {
	const w = time.Second
	cfg := DefaultConfig()
	cfg.Sources = []string{SourceHwmon, SourceModel}
	p := newTestPoller(t, cfg, w, nil)
	hw := p.order[0].p
	end := time.Unix(1_800_000_010, 0)

	// Nothing read yet: the model answers.
	r := p.Window(end.UnixNano(), h100GPUs)
	if !r.HasPower || r.Source != telemetry.NodePowerSource_NODE_POWER_MODEL || r.PowerMW != 1_500_000+8*387_500+8*600_000 {
		t.Errorf("model result %+v", r)
	}
	// A reading inside the window wins (hwmon is first); two average.
	hw.store(end.Add(-900*time.Millisecond), Sample{PowerW: 7000})
	hw.store(end.Add(-100*time.Millisecond), Sample{PowerW: 7100})
	r = p.Window(end.UnixNano(), h100GPUs)
	if !r.HasPower || r.Source != telemetry.NodePowerSource_NODE_POWER_HWMON || r.PowerMW != 7_050_000 {
		t.Errorf("hwmon result %+v, want 7050 W from hwmon", r)
	}
	// The next window has no hwmon reading of its own: never the stale
	// one; the model takes over.
	r = p.Window(end.Add(w).UnixNano(), h100GPUs)
	if r.Source != telemetry.NodePowerSource_NODE_POWER_MODEL {
		t.Errorf("stale hwmon used: %+v", r)
	}
	// A reading after the window end belongs to the next window.
	hw.store(end.Add(time.Millisecond), Sample{PowerW: 9999})
	if r = p.Window(end.UnixNano(), h100GPUs); r.PowerMW != 7_050_000 {
		t.Errorf("later reading counted: %+v", r)
	}
	// Without the model and a fresh reading, node power is absent (not 0).
	cfg.Sources = []string{SourceHwmon}
	p2 := newTestPoller(t, cfg, w, nil)
	if r := p2.Window(end.UnixNano(), h100GPUs); r.HasPower || r.PowerMW != 0 {
		t.Errorf("no source answered, got %+v", r)
	}
	var rep telemetry.NodeReport
	p2.Window(end.UnixNano(), h100GPUs).Apply(&rep)
	if rep.NodePowerMw != nil || rep.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_NONE || rep.CpuPowerMw != nil || rep.NodeEnergyMj != nil {
		t.Errorf("absent node power on the wire: %v", &rep)
	}
}

func TestMaxAgeForSlowSources(t *testing.T) {
	const w = time.Second
	cfg := DefaultConfig()
	cfg.Sources = []string{SourceHwmon}
	cfg.Hwmon.Interval, cfg.Hwmon.MaxBackoff = 5*time.Second, time.Minute
	p := newTestPoller(t, cfg, w, nil)
	end := time.Unix(1_800_000_010, 0)
	p.order[0].p.store(end.Add(-4*time.Second), Sample{PowerW: 5000, EnergyMJ: 42, HasEnergy: true})
	r := p.Window(end.UnixNano(), GPUs{})
	if !r.HasPower || r.PowerMW != 5_000_000 || !r.HasEnergy || r.EnergyMJ != 42 {
		t.Errorf("within max_age (= 5 s interval): %+v", r)
	}
	if r := p.Window(end.Add(2*time.Second).UnixNano(), GPUs{}); r.HasPower {
		t.Errorf("6 s old reading used with max_age 5 s: %+v", r)
	}
	// The latest reading, not an average over max_age; and a window with a
	// reading of its own averages only those.
	p.order[0].p.store(end.Add(-2*time.Second), Sample{PowerW: 5200})
	if r := p.Window(end.UnixNano(), GPUs{}); r.PowerMW != 5_200_000 || r.HasEnergy {
		t.Errorf("latest within max_age: %+v, want 5200 W without energy", r)
	}
	p.order[0].p.store(end.Add(-500*time.Millisecond), Sample{PowerW: 6000})
	if r := p.Window(end.UnixNano(), GPUs{}); r.PowerMW != 6_000_000 {
		t.Errorf("window's own reading: %+v, want 6000 W", r)
	}
}

func TestPollerFirstAnsweringSourceWins(t *testing.T) {
	const w = 50 * time.Millisecond
	cfg := Config{Sources: nil}
	reg := prometheus.NewRegistry()
	bmc := failing("bmc", errors.New("connection refused"))
	meter := constSource("meter", telemetry.NodePowerSource_NODE_POWER_HWMON, 6500)
	pc := PollConfig{Timeout: 20 * time.Millisecond, MaxBackoff: w}
	// WithSource prepends: the order is bmc, meter.
	p := newTestPoller(t, cfg, w, reg, WithSource(meter, pc), WithSource(bmc, pc))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		end := time.Now().UnixNano() / int64(w) * int64(w)
		r := p.Window(end, h100GPUs)
		if r.HasPower {
			if r.Source != telemetry.NodePowerSource_NODE_POWER_HWMON || r.PowerMW != 6_500_000 {
				t.Fatalf("result %+v, want the meter's 6500 W", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no window with node power")
		}
		time.Sleep(w / 2)
	}
	waitUntil(t, "bmc error counted", func() bool {
		return testutil.ToFloat64(p.m.errors.WithLabelValues("bmc", "error")) >= 1
	})
	if n := testutil.ToFloat64(p.m.reads.WithLabelValues("bmc")); n != 0 {
		t.Errorf("bmc reads %v", n)
	}
	if n := testutil.ToFloat64(p.m.windows.WithLabelValues("hwmon")); n < 1 {
		t.Errorf("windows_total{source=hwmon} = %v", n)
	}
}

func TestPollerHonoursRetryAfterAndTimeout(t *testing.T) {
	const w = 20 * time.Millisecond
	busy := failing("busy", &RetryAfterError{Status: 503, After: time.Hour})
	var slowCalls atomic.Int64
	slow := &fakeSource{name: "slow", kind: telemetry.NodePowerSource_NODE_POWER_REDFISH, fn: func(ctx context.Context) (Sample, error) {
		slowCalls.Add(1)
		<-ctx.Done() // a BMC that never answers
		return Sample{}, ctx.Err()
	}}
	pc := PollConfig{Timeout: 10 * time.Millisecond, MaxBackoff: time.Hour}
	p := newTestPoller(t, Config{}, w, nil, WithSource(busy, pc), WithSource(slow, pc))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	waitUntil(t, "both sources polled once", func() bool { return busy.calls.Load() >= 1 && slowCalls.Load() >= 1 })
	waitUntil(t, "timeout counted", func() bool {
		return testutil.ToFloat64(p.m.errors.WithLabelValues("slow", "timeout")) >= 1
	})
	// Let many windows pass: the busy BMC asked for an hour, and the slow
	// one backs off (20 ms doubling): neither is hammered.
	time.Sleep(50 * w)
	cancel()
	<-done
	if n := busy.calls.Load(); n != 1 {
		t.Errorf("busy BMC polled %d times, want 1 (Retry-After: 1h)", n)
	}
	if n := testutil.ToFloat64(p.m.errors.WithLabelValues("busy", "busy")); n != 1 {
		t.Errorf("busy errors %v, want 1", n)
	}
	if n := slowCalls.Load(); n > 12 {
		t.Errorf("slow BMC polled %d times in 50 windows, want backoff (≤ 12)", n)
	}
}

func TestNextPollAligned(t *testing.T) {
	pl := &polled{interval: time.Second}
	base := time.Unix(1_800_000_000, 0)
	f := func(t0, earliest time.Duration, want time.Duration) {
		t.Helper()
		if got := pl.nextPoll(base.Add(t0), base.Add(earliest)); !got.Equal(base.Add(want)) {
			t.Errorf("nextPoll(+%s, +%s) = +%s, want +%s", t0, earliest, got.Sub(base), want)
		}
	}
	f(0, 0, 100*time.Millisecond)
	f(100*time.Millisecond, 100*time.Millisecond, 1100*time.Millisecond) // strictly after
	f(350*time.Millisecond, 350*time.Millisecond, 1100*time.Millisecond)
	f(350*time.Millisecond, 3*time.Second, 3100*time.Millisecond)
}

func TestValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sources = []string{"redfish", "ipmi", "redfish", "hwmon", "model"}
	cfg.Redfish.URL = "http://admin:hunter2@bmc"
	cfg.Redfish.User = "admin"
	cfg.Redfish.Timeout = 2 * time.Second
	cfg.Redfish.CAFile, cfg.Redfish.InsecureSkipVerify = "/ca.pem", true
	cfg.Hwmon.Interval = 100 * time.Millisecond
	cfg.Model.NodeType = "dgxa100"
	cfg.RAPL.Enabled, cfg.RAPL.SysfsRoot = true, ""
	err := cfg.Validate("node_power", time.Second)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, key := range []string{"node_power.sources[1]", "node_power.sources[2]", "node_power.redfish.url", "node_power.redfish.timeout",
		"node_power.redfish.user", "node_power.redfish.insecure_skip_verify", "node_power.hwmon.interval",
		"node_power.model.node_type", "node_power.rapl.sysfs_root"} {
		if !strings.Contains(msg, key+":") {
			t.Errorf("error does not name %s:\n%s", key, msg)
		}
	}
	if strings.Contains(msg, "hunter2") {
		t.Errorf("error shows the password:\n%s", msg)
	}
	if err := DefaultConfig().Validate("node_power", time.Second); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
