package sim

import (
	"math"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// TestScenarioYAML runs a scripted scenario from YAML: a job on hall h1
// only, starting at 60 s, and a capped second hall.
func TestScenarioYAML(t *testing.T) {
	const doc = `
seed: 42
epoch: 2026-11-27T00:00:00Z
power_limit_w: 500
noise: 0
jobs:
  - {name: h1, nodes: "hall=h1", start: 60s, ramp: 10s, period: 1s, duty: 0.5, compute_frac: 0.9, comm_frac: 0.3}
  - {name: h2, nodes: "hall=h2", period: 4s, duty: 0.75, compute_frac: 0.9, comm_frac: 0.5}
`
	cfg := DefaultConfig()
	if err := config.Decode([]byte(doc), "scenario.yaml", &cfg); err != nil {
		t.Fatal(err)
	}
	locs := []telemetry.Location{
		{Site: "dc1", Hall: "h1", Row: "r1", Rack: "k1", Node: "a"},
		{Site: "dc1", Hall: "h2", Row: "r1", Rack: "k1", Node: "b"},
	}
	f, err := NewFleet(cfg, locs)
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	power := func(i int, end time.Duration) (float64, uint64) {
		f.Report(&rep, i, t0.Add(end), time.Second, 100*time.Millisecond)
		w, reasons := 0.0, uint64(0)
		for _, g := range rep.Gpus {
			w += telemetry.MilliwattsToW(g.GetPowerMw())
			reasons |= g.GetThrottleReasons()
		}
		return w, reasons
	}
	if w, reasons := power(0, 30*time.Second); math.Abs(w-8*70)/(8*70) > 0.03 || reasons&nvml.ClocksEventReasonGpuIdle == 0 {
		t.Errorf("h1 before its job: %.0f W reasons %#x, want ≈ 560 W idle", w, reasons)
	}
	// Running: mean of capped compute (500 W) and comm (0.3×700 = 210 W).
	if w, reasons := power(0, 90*time.Second); math.Abs(w-8*355)/(8*355) > 0.03 || reasons&nvml.ClocksEventReasonSwPowerCap == 0 {
		t.Errorf("h1 running: %.0f W reasons %#x, want ≈ 2840 W with SwPowerCap", w, reasons)
	}
	// h2 over its 4 s period: 0.75×500 + 0.25×350.
	total := 0.0
	for s := 1; s <= 8; s++ {
		w, _ := power(1, time.Duration(s)*time.Second)
		total += w / 8
	}
	if want := 8 * (0.75*500 + 0.25*350); math.Abs(total-want)/want > 0.03 {
		t.Errorf("h2 mean %.0f W, want %.0f W", total, want)
	}
}

// TestClockGaps: a long pause is skipped without going back, and a clock
// that steps back restarts the state.
func TestClockGaps(t *testing.T) {
	f, err := NewFleet(DefaultConfig(), []telemetry.Location{testLoc})
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	f.Report(&rep, 0, t0.Add(time.Second), time.Second, 100*time.Millisecond)
	e1 := rep.Gpus[0].GetEnergyMj()
	f.Report(&rep, 0, t0.Add(time.Hour), time.Second, 100*time.Millisecond)
	e2 := rep.Gpus[0].GetEnergyMj()
	if gained := float64(e2-e1) / 1000 / 3600; e2 < e1 || gained < 300 || gained > 700 {
		t.Errorf("an hour's gap: counter %d → %d (%.0f W mean)", e1, e2, gained)
	}
	f.Report(&rep, 0, t0.Add(time.Minute), time.Second, 100*time.Millisecond) // back in time
	if p, e3 := rep.Gpus[0].GetPowerMw(), rep.Gpus[0].GetEnergyMj(); p < 100_000 || p > 700_000 || e3 < e2 {
		t.Errorf("after stepping back: %d mW, counter %d → %d", p, e2, e3)
	}

	clk := newFakeClock(t0)
	d := dev(t, mustNew(t, DefaultConfig(), testLoc, clk.now), 0)
	a, _ := d.GetTotalEnergyConsumption()
	clk.add(time.Hour)
	b, _ := d.GetTotalEnergyConsumption()
	if gained := float64(b-a) / 1000 / 3600; b < a || gained < 300 || gained > 700 {
		t.Errorf("NVML after an hour's gap: counter %d → %d (%.0f W mean)", a, b, gained)
	}
	if temp, _ := d.GetTemperature(nvml.TEMPERATURE_GPU); temp < 40 || temp > 80 {
		t.Errorf("temperature after the gap: %d", temp)
	}
	clk.add(-time.Minute)
	if c, _ := d.GetTotalEnergyConsumption(); c < b {
		t.Errorf("NVML clock stepped back: counter %d → %d", b, c)
	}
}
