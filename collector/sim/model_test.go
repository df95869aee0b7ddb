package sim

import (
	"math"
	"math/cmplx"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/telemetry"
)

var t0 = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)

// quietConfig has no noise, no per-GPU variation and a scenario epoch t0.
func quietConfig() Config {
	cfg := DefaultConfig()
	cfg.Epoch = t0
	cfg.Noise = 0
	cfg.Variation = 0
	cfg.Jobs = []Job{{Name: "j", Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.95, CommFrac: 0.35}}
	return cfg
}

// readings is everything the collector reads from one GPU.
type readings struct {
	instant, memTemp nvml.FieldValue
	power, temp      uint32
	energy           uint64
	clock            uint32
	util             nvml.Utilization
	reasons          uint64
	uuid             string
}

func read(t *testing.T, d nvml.Device) readings {
	t.Helper()
	var r readings
	fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}, {FieldId: nvml.FI_DEV_MEMORY_TEMP}}
	if ret := d.GetFieldValues(fv); ret != nvml.SUCCESS {
		t.Fatalf("GetFieldValues: %v", ret)
	}
	r.instant, r.memTemp = fv[0], fv[1]
	r.power, _ = d.GetPowerUsage()
	r.energy, _ = d.GetTotalEnergyConsumption()
	r.temp, _ = d.GetTemperature(nvml.TEMPERATURE_GPU)
	r.clock, _ = d.GetClockInfo(nvml.CLOCK_SM)
	r.util, _ = d.GetUtilizationRates()
	r.reasons, _ = d.GetCurrentClocksEventReasons()
	r.uuid, _ = d.GetUUID()
	return r
}

func instantW(t *testing.T, d nvml.Device) float64 {
	t.Helper()
	fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}}
	if ret := d.GetFieldValues(fv); ret != nvml.SUCCESS || fv[0].NvmlReturn != uint32(nvml.SUCCESS) {
		t.Fatalf("power instant: %v %v", ret, nvml.Return(fv[0].NvmlReturn))
	}
	return float64(uint32(fv[0].Value[0])|uint32(fv[0].Value[1])<<8|uint32(fv[0].Value[2])<<16|uint32(fv[0].Value[3])<<24) / 1000
}

func TestDeterminism(t *testing.T) {
	run := func(seed uint64) []readings {
		cfg := DefaultConfig()
		cfg.Seed = seed
		clk := newFakeClock(t0)
		lib := mustNew(t, cfg, testLoc, clk.now)
		var out []readings
		for range 50 {
			clk.add(37 * time.Millisecond)
			for g := range 8 {
				out = append(out, read(t, dev(t, lib, g)))
			}
		}
		return out
	}
	a, b, c := run(1), run(1), run(2)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("reading %d differs for the same seed:\n%+v\n%+v", i, a[i], b[i])
		}
	}
	same := 0
	for i := range a {
		if a[i].instant == c[i].instant {
			same++
		}
	}
	if same > len(a)/10 {
		t.Fatalf("%d of %d power readings equal for different seeds", same, len(a))
	}
}

// TestCallPatternIndependent: the state lives on a fixed grid, so how often
// a GPU is read does not change what it reads.
func TestCallPatternIndependent(t *testing.T) {
	clkA, clkB := newFakeClock(t0), newFakeClock(t0)
	a := dev(t, mustNew(t, DefaultConfig(), testLoc, clkA.now), 2)
	b := dev(t, mustNew(t, DefaultConfig(), testLoc, clkB.now), 2)
	for s := range 20 {
		for range 100 {
			clkA.add(10 * time.Millisecond)
			a.GetTotalEnergyConsumption()
		}
		clkB.add(time.Second)
		ea, _ := a.GetTotalEnergyConsumption()
		eb, _ := b.GetTotalEnergyConsumption()
		ta, _ := a.GetTemperature(nvml.TEMPERATURE_GPU)
		tb, _ := b.GetTemperature(nvml.TEMPERATURE_GPU)
		if ea != eb || ta != tb {
			t.Fatalf("after %d s: energy %d vs %d, temp %d vs %d", s+1, ea, eb, ta, tb)
		}
	}
}

// TestRackSwing: 18 nodes × 8 GPUs of one synchronised job swing the rack
// by 144 × (0.95-0.35) × 700 W at the job's period.
func TestRackSwing(t *testing.T) {
	cfg := DefaultConfig() // with noise and per-GPU variation
	cfg.Epoch = t0
	cfg.Jobs = []Job{{Name: "j", Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.95, CommFrac: 0.35}}
	locs := benchNodes(18)
	f, err := NewFleet(cfg, locs)
	if err != nil {
		t.Fatal(err)
	}
	const windows = 20
	var rack []float64
	var rep telemetry.NodeReport
	for w := range windows {
		end := t0.Add(time.Minute + time.Duration(w+1)*time.Second)
		sum := make([]float64, 10)
		for i := range locs {
			f.Report(&rep, i, end, time.Second, 100*time.Millisecond)
			if len(rep.SlotPowerW) != 10 {
				t.Fatalf("%d slots", len(rep.SlotPowerW))
			}
			for j, p := range rep.SlotPowerW {
				sum[j] += float64(p)
			}
		}
		rack = append(rack, sum...)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range rack {
		lo, hi = min(lo, p), max(hi, p)
	}
	want := 18 * 8 * 0.6 * 700.0
	if got := hi - lo; math.Abs(got-want)/want > 0.02 {
		t.Errorf("rack peak-to-peak %.0f W, want %.0f W ±2%%", got, want)
	}
	// Dominant frequency by DFT of the 10 Hz series.
	mean := 0.0
	for _, p := range rack {
		mean += p / float64(len(rack))
	}
	best, bestMag := 0, 0.0
	for k := 1; k <= len(rack)/2; k++ {
		var s complex128
		for i, p := range rack {
			s += complex(p-mean, 0) * cmplx.Exp(complex(0, -2*math.Pi*float64(k*i)/float64(len(rack))))
		}
		if m := cmplx.Abs(s); m > bestMag {
			best, bestMag = k, m
		}
	}
	period := time.Duration(float64(len(rack)) / float64(best) * 0.1 * float64(time.Second))
	if period != 2*time.Second {
		t.Errorf("dominant period %v, want 2s", period)
	}
}

func TestJobShape(t *testing.T) {
	cfg := quietConfig()
	cfg.Jobs = []Job{{Name: "j", Start: 100 * time.Second, Stop: 200 * time.Second, Ramp: 10 * time.Second,
		Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.9, CommFrac: 0.3,
		CheckpointEvery: 30 * time.Second, CheckpointFor: 5 * time.Second}}
	p, err := newParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(p, testLoc)
	f := func(at time.Duration, wantW float64, wantAct activity) {
		t.Helper()
		w, act, _ := n.demand(int64(at))
		if math.Abs(w-wantW) > 1e-6 || act != wantAct {
			t.Errorf("at %v: %.1f W %d, want %.1f W %d", at, w, act, wantW, wantAct)
		}
	}
	f(50*time.Second, 70, actIdle)                                        // before the job
	f(104*time.Second+500*time.Millisecond, 70+0.45*(630-70), actCompute) // half-way up the ramp
	f(120*time.Second+500*time.Millisecond, 630, actCompute)
	f(121*time.Second+500*time.Millisecond, 210, actComm)
	f(127*time.Second, 70*checkpointIdleMul, actCheckpoint)               // 25..30 s of each 30 s
	f(194*time.Second+500*time.Millisecond, 70+0.55*(630-70), actCompute) // half-way down
	f(200*time.Second, 70, actIdle)
}

// TestThermalStep: a step in power moves the temperature to inlet + R·P
// with time constant tau.
func TestThermalStep(t *testing.T) {
	cfg := quietConfig()
	cfg.ThermalTau = 30 * time.Second
	cfg.Jobs = []Job{{Name: "j", Start: 100 * time.Second, Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.9}}
	clk := newFakeClock(t0)
	d := dev(t, mustNew(t, cfg, testLoc, clk.now), 0)
	cold := 30 + 0.06*70.0
	hot := 30 + 0.06*630.0
	f := func(at time.Duration, want float64) {
		t.Helper()
		clk.t = t0.Add(at)
		got, ret := d.GetTemperature(nvml.TEMPERATURE_GPU)
		if ret != nvml.SUCCESS || math.Abs(float64(got)-want) > 0.5 {
			t.Errorf("at %v: %d °C (%v), want %.1f", at, got, ret, want)
		}
		fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_MEMORY_TEMP}}
		d.GetFieldValues(fv)
		if mem := float64(fv[0].Value[0]); math.Abs(mem-(want+5)) > 0.5 {
			t.Errorf("at %v: memory %v °C, want %.1f", at, mem, want+5)
		}
	}
	f(99*time.Second, cold)
	f(130*time.Second, hot-(hot-cold)*math.Exp(-1))
	f(160*time.Second, hot-(hot-cold)*math.Exp(-2))
	f(400*time.Second, hot)
}

func TestThrottle(t *testing.T) {
	t.Run("power cap", func(t *testing.T) {
		cfg := quietConfig()
		cfg.PowerLimitW = 600
		clk := newFakeClock(t0.Add(time.Minute + 500*time.Millisecond)) // compute half
		d := dev(t, mustNew(t, cfg, testLoc, clk.now), 0)
		r := read(t, d)
		if p := instantW(t, d); p != 600 || r.reasons&nvml.ClocksEventReasonSwPowerCap == 0 {
			t.Errorf("compute: %.1f W reasons %#x, want 600 W and SwPowerCap", p, r.reasons)
		}
		if r.clock >= 1980 {
			t.Errorf("capped clock %d MHz, want below max", r.clock)
		}
		clk.add(time.Second) // comm half
		r = read(t, d)
		if p := instantW(t, d); p != 245 || r.reasons&nvml.ClocksEventReasonSwPowerCap != 0 {
			t.Errorf("comm: %.1f W reasons %#x, want 245 W and no cap", p, r.reasons)
		}
	})
	t.Run("thermal", func(t *testing.T) {
		cfg := quietConfig()
		cfg.InletC, cfg.ThermalRCPerW = 60, 0.1 // 60 + 0.1×665 would be 126 °C
		cfg.Jobs[0].Duty = 1
		clk := newFakeClock(t0)
		d := dev(t, mustNew(t, cfg, testLoc, clk.now), 0)
		for range 60 { // ten minutes, read every 10 s
			clk.add(10 * time.Second)
			d.GetTemperature(nvml.TEMPERATURE_GPU)
		}
		r := read(t, d)
		want := uint64(nvml.ClocksEventReasonSwThermalSlowdown | nvml.ClocksThrottleReasonHwThermalSlowdown)
		if r.reasons&want != want || r.temp <= 87 || r.temp > 100 {
			t.Errorf("hot GPU: %d °C reasons %#x, want > 87 °C with thermal slowdown bits", r.temp, r.reasons)
		}
		if p := instantW(t, d); p >= 665 {
			t.Errorf("thermally throttled power %.0f W, want below the demand of 665 W", p)
		}
	})
}

// TestEnergyConsistent: the counter is monotonic and its delta over a second
// is the mean of the instantaneous power; GetPowerUsage is that mean.
func TestEnergyConsistent(t *testing.T) {
	clk := newFakeClock(t0)
	d := dev(t, mustNew(t, DefaultConfig(), testLoc, clk.now), 4)
	prev, _ := d.GetTotalEnergyConsumption()
	for s := range 30 {
		e0 := prev
		sum := 0.0
		for range 100 {
			clk.add(10 * time.Millisecond)
			sum += instantW(t, d)
			e, ret := d.GetTotalEnergyConsumption()
			if ret != nvml.SUCCESS || e < prev {
				t.Fatalf("energy %d after %d (%v)", e, prev, ret)
			}
			prev = e
		}
		mean := float64(prev-e0) / 1000
		if inst := sum / 100; math.Abs(mean-inst)/inst > 0.02 {
			t.Errorf("second %d: energy says %.1f W, instants %.1f W", s, mean, inst)
		}
		if pu, _ := d.GetPowerUsage(); s > 0 && math.Abs(float64(pu)/1000-mean)/mean > 0.02 {
			t.Errorf("second %d: GetPowerUsage %d mW, energy mean %.1f W", s, pu, mean)
		}
	}
}
