package collector

import (
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

var t0 = time.Unix(1_800_000_000, 0)

// win builds a window with the given instantaneous samples (mW) and, when
// energy >= 0, a window-end energy reading (mJ) taken at `at`.
func win(samples []uint32, energy int64, at time.Time) *gpuWindow {
	w := &gpuWindow{index: 3}
	for k, v := range samples {
		w.slotMW[k] = v
		w.slotOK |= 1 << k
	}
	w.haveEnd = true
	w.end.at = at
	if energy >= 0 {
		w.end.energyMJ, w.end.energyOK = uint64(energy), true
	}
	return w
}

func u32(v uint32) *uint32 { return &v }

func TestSummarizeEnergyAndInstants(t *testing.T) {
	const window = time.Second
	ten := func(v uint32) []uint32 {
		s := make([]uint32, 10)
		for i := range s {
			s[i] = v
		}
		return s
	}
	type step struct {
		w         *gpuWindow
		wantMean  *uint32 // nil: absent
		wantMin   *uint32
		wantMax   *uint32
		wantEpoch uint32
	}
	f := func(name string, steps ...step) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			var st energyState
			for i, s := range steps {
				g := summarize(&st, s.w, window)
				check := func(what string, got, want *uint32) {
					t.Helper()
					switch {
					case want == nil && got != nil:
						t.Errorf("step %d: %s = %d, want absent", i, what, *got)
					case want != nil && got == nil:
						t.Errorf("step %d: %s absent, want %d", i, what, *want)
					case want != nil && *got != *want:
						t.Errorf("step %d: %s = %d, want %d", i, what, *got, *want)
					}
				}
				check("power_mw", g.PowerMw, s.wantMean)
				check("power_min_mw", g.PowerMinMw, s.wantMin)
				check("power_max_mw", g.PowerMaxMw, s.wantMax)
				if g.EnergyEpoch != s.wantEpoch {
					t.Errorf("step %d: energy_epoch = %d, want %d", i, g.EnergyEpoch, s.wantEpoch)
				}
			}
		})
	}

	// First window: no delta yet, mean of the instants.
	f("first window uses instants",
		step{w: win([]uint32{600_000, 700_000, 800_000}, 5_000_000, t0), wantMean: u32(700_000), wantMin: u32(600_000), wantMax: u32(800_000)})
	// Second window: 650 J over exactly 1 s = 650 W, whatever the instants say.
	f("energy delta wins",
		step{w: win(ten(700_000), 5_000_000, t0), wantMean: u32(700_000), wantMin: u32(700_000), wantMax: u32(700_000)},
		step{w: win([]uint32{100_000, 900_000}, 5_650_000, t0.Add(time.Second)), wantMean: u32(650_000), wantMin: u32(100_000), wantMax: u32(900_000)})
	// ΔmJ/Δms with a read that came 10 ms late: 707 J over 1.010 s = 700 W.
	f("delta over the actual interval",
		step{w: win(ten(1), 1_000_000, t0), wantMean: u32(1), wantMin: u32(1), wantMax: u32(1)},
		step{w: win(ten(1), 1_707_000, t0.Add(1010*time.Millisecond)), wantMean: u32(700_000), wantMin: u32(1), wantMax: u32(1)})
	// Counter went backwards (driver reload): new epoch, instants, then deltas again.
	f("counter reset starts a new epoch",
		step{w: win(ten(500_000), 9_000_000_000, t0), wantMean: u32(500_000), wantMin: u32(500_000), wantMax: u32(500_000)},
		step{w: win(ten(400_000), 1_000, t0.Add(time.Second)), wantMean: u32(400_000), wantMin: u32(400_000), wantMax: u32(400_000), wantEpoch: 1},
		step{w: win(ten(400_000), 301_000, t0.Add(2*time.Second)), wantMean: u32(300_000), wantMin: u32(400_000), wantMax: u32(400_000), wantEpoch: 1})
	// A counter that restarted but landed above the old value would give a
	// lifetime-sized delta: rejected as a new epoch.
	f("implausible delta is a reset",
		step{w: win(ten(500_000), 1_000, t0), wantMean: u32(500_000), wantMin: u32(500_000), wantMax: u32(500_000)},
		step{w: win(ten(500_000), 9_000_000_000, t0.Add(time.Second)), wantMean: u32(500_000), wantMin: u32(500_000), wantMax: u32(500_000), wantEpoch: 1})
	// A gap (the previous reading is two windows old) is not this window's energy.
	f("gap falls back to instants",
		step{w: win(ten(500_000), 1_000_000, t0), wantMean: u32(500_000), wantMin: u32(500_000), wantMax: u32(500_000)},
		step{w: win(ten(600_000), 2_000_000, t0.Add(2*time.Second)), wantMean: u32(600_000), wantMin: u32(600_000), wantMax: u32(600_000)})
	// Energy counter not supported: instants only, energy absent.
	f("no energy counter",
		step{w: win([]uint32{300_000, 500_000}, -1, t0), wantMean: u32(400_000), wantMin: u32(300_000), wantMax: u32(500_000)},
		step{w: win([]uint32{300_000, 300_000}, -1, t0.Add(time.Second)), wantMean: u32(300_000), wantMin: u32(300_000), wantMax: u32(300_000)})
	// No instants but an energy delta: mean from energy, min/max absent.
	f("energy without instants",
		step{w: win(nil, 0, t0)},
		step{w: win(nil, 450_000, t0.Add(time.Second)), wantMean: u32(450_000)})
	// Nothing at all: every power field absent, never 0.
	f("nothing read", step{w: win(nil, -1, t0)})
}

func TestSummarizeAbsentFieldsAndHealth(t *testing.T) {
	var st energyState
	w := win([]uint32{700_000}, 1, t0)
	w.end.tempC, w.end.tempOK = 61, true
	w.throttle, w.throttleSeen = 0x4|0x1, true
	g := summarize(&st, w, time.Second)
	want := &telemetry.Gpu{Index: 3, PowerMw: u32(700_000), PowerMinMw: u32(700_000), PowerMaxMw: u32(700_000),
		EnergyMj: proto.Uint64(1), TempC: proto.Int32(61), ThrottleReasons: proto.Uint64(5)}
	if !proto.Equal(g, want) {
		t.Errorf("got %v\nwant %v", g, want)
	}
	// Unsupported temperature must be absent, not 0.
	if g.MemTempC != nil || g.PowerLimitMw != nil || g.SmClockMhz != nil || g.UtilPct != nil {
		t.Errorf("unsupported fields present: %v", g)
	}

	for _, h := range []telemetry.Health{telemetry.Health_HEALTH_LOST, telemetry.Health_HEALTH_TIMEOUT} {
		w := win([]uint32{700_000}, 2, t0.Add(time.Second))
		w.health, w.errText = h, "boom"
		g := summarize(&st, w, time.Second)
		want := &telemetry.Gpu{Index: 3, Health: h, Error: "boom"}
		if !proto.Equal(g, want) {
			t.Errorf("%v: got %v, want %v", h, g, want)
		}
	}

	// Every power read failed with a real error: health ERROR.
	w = win(nil, -1, t0)
	w.powerErr = "power: ERROR_UNKNOWN"
	if g := summarize(&st, w, time.Second); g.Health != telemetry.Health_HEALTH_ERROR || g.Error != w.powerErr {
		t.Errorf("all power reads failed: got %v", g)
	}
}

func TestNodeSlots(t *testing.T) {
	f := func(name string, gpus []gpuWindow, slots int, want []uint32, wantMask uint32) {
		t.Helper()
		out := make([]uint32, slots)
		mask := nodeSlots(gpus, slots, out)
		if mask != wantMask {
			t.Errorf("%s: mask = %b, want %b", name, mask, wantMask)
		}
		for k := range want {
			if out[k] != want[k] {
				t.Errorf("%s: slots = %v, want %v", name, out, want)
				break
			}
		}
	}
	g := func(h telemetry.Health, samples ...uint32) gpuWindow {
		var w gpuWindow
		for k, v := range samples {
			if v != 0 {
				w.slotMW[k] = v
				w.slotOK |= 1 << k
			}
		}
		w.health = h
		return w
	}
	ok := telemetry.Health_HEALTH_OK
	f("sum of healthy GPUs", []gpuWindow{g(ok, 700_400, 700_000), g(ok, 300_000, 300_600)}, 2, []uint32{1000, 1001}, 0)
	f("lost and timed-out GPUs are not summed",
		[]gpuWindow{g(ok, 500_000, 500_000), g(telemetry.Health_HEALTH_LOST, 900_000, 900_000), g(telemetry.Health_HEALTH_TIMEOUT, 900_000, 900_000)},
		2, []uint32{500, 500}, 0)
	f("a GPU missing in one slot is left out of that slot", []gpuWindow{g(ok, 500_000, 500_000), g(ok, 500_000, 0)}, 2, []uint32{1000, 500}, 0)
	f("slot with no GPU gets the mean and its bit", []gpuWindow{g(ok, 400_000, 0, 600_000)}, 3, []uint32{400, 500, 600}, 0b010)
	f("nothing read at all", []gpuWindow{g(ok)}, 2, []uint32{0, 0}, 0b11)
}
