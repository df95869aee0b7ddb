package nodepower

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestHwmonReadsThePowerMeter(t *testing.T) {
	root := unpackTree(t, "sys-h100")
	h := NewHwmon(root)
	s, err := h.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.PowerW != 6512.345 {
		t.Errorf("power %v W, want 6512.345 (power1_average 6512345000 µW)", s.PowerW)
	}
	if s.HasEnergy {
		t.Error("hwmon has no energy counter")
	}
	// The value changes: the next read sees it.
	writeFile(t, filepath.Join(root, "class/hwmon/hwmon2/power1_average"), "7000000000\n")
	if s, err = h.Read(context.Background()); err != nil || s.PowerW != 7000 {
		t.Errorf("second read %v W, %v; want 7000", s.PowerW, err)
	}
}

func TestHwmonWithoutPowerMeter(t *testing.T) {
	root := unpackTree(t, "sys-h100")
	if err := os.RemoveAll(filepath.Join(root, "class/hwmon/hwmon2")); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHwmon(root).Read(context.Background()); !errors.Is(err, errNoMeter) {
		t.Errorf("err %v, want errNoMeter", err)
	}
}

func TestHwmonDeviceNameUnderDevice(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "class/hwmon/hwmon3/device/name"), "power_meter\n")
	writeFile(t, filepath.Join(root, "class/hwmon/hwmon3/device/power1_average"), "350000000\n")
	s, err := NewHwmon(root).Read(context.Background())
	if err != nil || s.PowerW != 350 {
		t.Errorf("%v W, %v; want 350", s.PowerW, err)
	}
}

func TestParseHwmon(t *testing.T) {
	f := func(in string, want uint64, ok bool) {
		t.Helper()
		got, err := ParseHwmonMicrowatts([]byte(in))
		if (err == nil) != ok || got != want {
			t.Errorf("ParseHwmonMicrowatts(%q) = %d, %v; want %d ok=%v", in, got, err, want, ok)
		}
	}
	f("6512345000\n", 6512345000, true)
	f("  0 \n", 0, true)
	f("", 0, false)
	f("-5\n", 0, false)
	f("12.5\n", 0, false)
	f("1000000000000001\n", 0, false) // beyond 1 MW
}

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func setRAPL(t *testing.T, root, zone string, uj uint64) {
	writeFile(t, filepath.Join(root, "class/powercap", zone, "energy_uj"), strconv.FormatUint(uj, 10)+"\n")
}

func TestRAPLPackagePlusDRAM(t *testing.T) {
	root := unpackTree(t, "sys-h100")
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	r := NewRAPL(root, clk.now)
	if _, err := r.Read(context.Background()); !errors.Is(err, ErrNoData) {
		t.Fatalf("first read: %v, want ErrNoData (primes the counters)", err)
	}
	// Over 2 s: package-0 +100 J, its dram +5 J, package-1 +200 J, its dram
	// +6 J; core (+90 J, inside the package) and psys (+900 J, the
	// platform) are not added.
	setRAPL(t, root, "intel-rapl:0", 100_000_000+100_000_000)
	setRAPL(t, root, "intel-rapl:0:0", 5_000_000+5_000_000)
	setRAPL(t, root, "intel-rapl:0:1", 90_000_000+90_000_000)
	setRAPL(t, root, "intel-rapl:1", 200_000_000+200_000_000)
	setRAPL(t, root, "intel-rapl:1:0", 6_000_000+6_000_000)
	setRAPL(t, root, "intel-rapl:2", 900_000_000+900_000_000)
	clk.t = clk.t.Add(2 * time.Second)
	s, err := r.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := (100.0 + 5 + 200 + 6) / 2; math.Abs(s.PowerW-want) > 1e-9 {
		t.Errorf("CPU power %v W, want %v", s.PowerW, want)
	}
}

func TestRAPLWrapAround(t *testing.T) {
	root := t.TempDir()
	const max = 262143328850
	zone := filepath.Join(root, "class/powercap/intel-rapl:0")
	writeFile(t, filepath.Join(zone, "name"), "package-0\n")
	writeFile(t, filepath.Join(zone, "max_energy_range_uj"), strconv.Itoa(max)+"\n")
	setRAPL(t, root, "intel-rapl:0", max-1_000_000)
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	r := NewRAPL(root, clk.now)
	if _, err := r.Read(context.Background()); !errors.Is(err, ErrNoData) {
		t.Fatal(err)
	}
	setRAPL(t, root, "intel-rapl:0", 3_999_999) // wrapped: 1 J to the top, 4 J after
	clk.t = clk.t.Add(time.Second)
	s, err := r.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(s.PowerW-5) > 1e-9 {
		t.Errorf("power across the wrap %v W, want 5", s.PowerW)
	}
}

func TestCounterDelta(t *testing.T) {
	f := func(last, v, max, want uint64) {
		t.Helper()
		if got := counterDelta(last, v, max); got != want {
			t.Errorf("counterDelta(%d, %d, %d) = %d, want %d", last, v, max, got, want)
		}
	}
	f(10, 25, 100, 15)
	f(90, 5, 100, 16) // 90→100 is 10, wrap to 0 is 1, then 5
	f(90, 5, 0, 0)    // backwards without a range: a reset, no energy
	f(200, 5, 100, 0) // last beyond the range: a reset
}

func TestRAPLWithoutPowercap(t *testing.T) {
	if _, err := NewRAPL(t.TempDir(), nil).Read(context.Background()); err == nil || errors.Is(err, ErrNoData) {
		t.Errorf("err %v, want a missing-zone error", err)
	}
}

func TestModelEstimate(t *testing.T) {
	f := func(cfg ModelConfig, g GPUs, want uint32, ok bool) {
		t.Helper()
		got, gotOK := NewModel(cfg).Estimate(g)
		if got != want || gotOK != ok {
			t.Errorf("Estimate(%+v, %+v) = %d, %v; want %d, %v", cfg, g, got, gotOK, want, ok)
		}
	}
	h100 := GPUs{Count: 8, SumMW: 8 * 700_000, AllOK: true, ModelID: "NVIDIA H100 80GB HBM3"}
	// At 8 × 700 W the DGX H100 figure is its spec maximum, 10.2 kW.
	f(ModelConfig{NodeType: "auto"}, h100, 10_200_000, true)
	f(ModelConfig{NodeType: "dgxh100"}, GPUs{Count: 8, SumMW: 8 * 350_000, AllOK: true}, 1_500_000+8*387_500+8*350_000, true)
	b200 := GPUs{Count: 8, SumMW: 8 * 1_000_000, AllOK: true, ModelID: "NVIDIA B200"}
	f(ModelConfig{NodeType: "auto"}, b200, 14_300_000, true)
	f(ModelConfig{NodeType: "auto"}, GPUs{Count: 8, SumMW: 1, AllOK: true, ModelID: "NVIDIA H200"}, 1_500_000+8*387_500+1, true)
	// Overrides.
	f(ModelConfig{NodeType: "dgxb200", HostW: 2000}, b200, 2_000_000+8*600_000+8_000_000, true)
	f(ModelConfig{NodeType: "auto", HostW: 1000, PerGPUW: 100}, GPUs{Count: 4, SumMW: 4000, AllOK: true, ModelID: "Tesla T4"}, 1_404_000, true)
	// Absent, never low: an unknown node type, a GPU without a figure.
	f(ModelConfig{NodeType: "auto"}, GPUs{Count: 8, SumMW: 1, AllOK: true, ModelID: "Tesla T4"}, 0, false)
	f(ModelConfig{NodeType: "auto"}, GPUs{Count: 8, SumMW: 7 * 700_000, AllOK: false, ModelID: "NVIDIA H100"}, 0, false)
	f(ModelConfig{NodeType: "auto"}, GPUs{}, 0, false)
}

func TestNodeTypesAddUpToTheSpec(t *testing.T) {
	for name, nt := range nodeTypes {
		if got := nt.HostW + 8*(nt.PerGPUW+nt.GPUW); got != nt.MaxW {
			t.Errorf("%s: host %g + 8 × (%g + %g) = %g, want the spec's %g", name, nt.HostW, nt.PerGPUW, nt.GPUW, got, nt.MaxW)
		}
	}
}
