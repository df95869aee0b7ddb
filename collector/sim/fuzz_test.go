package sim

import (
	"os"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// FuzzConfig decodes and validates outside YAML; a config that validates
// must build a Fleet and a Driver that report without panicking.
func FuzzConfig(f *testing.F) {
	if b, err := os.ReadFile("testdata/sim.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("model: dgxb200\nseed: 7\nepoch: 2026-01-01T00:00:00Z\njobs: [{nodes: 'hall=h1', period: 1s, duty: 0.5, compute_frac: 1.1, comm_frac: 0.2, start: 10s, stop: 1m, ramp: 5s}]\n"))
	f.Add([]byte("faults: [{kind: energy_reset, gpu: 2, from: 1s}, {kind: noise, noise: 0.3}, {kind: not_supported, field: energy}, {kind: lost, gpu: 7, until: 3s}]\n"))
	f.Add([]byte("power_limit_w: 300\ninlet_c: 55\nthermal_r_c_per_w: 0.5\nvariation: 0.2\n"))
	f.Add([]byte("jobs: [{period: 0s}]\nfaults: [{kind: hang, gpu: 9}]\n"))
	locs := []telemetry.Location{testLoc, {Site: "s", Hall: "h2", Row: "r", Rack: "k", Node: "n"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := DefaultConfig()
		if err := config.Decode(data, "fuzz.yaml", &cfg); err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		fl, err := NewFleet(cfg, locs)
		if err != nil {
			t.Fatalf("valid config rejected by NewFleet: %v", err)
		}
		var rep telemetry.NodeReport
		at := time.Unix(1_800_000_000, 0)
		if !cfg.Epoch.IsZero() {
			at = cfg.Epoch.Add(time.Second)
		}
		for i := range locs {
			fl.Report(&rep, i, at, time.Second, 100*time.Millisecond)
			fl.Report(&rep, i, at.Add(time.Second), time.Second, 100*time.Millisecond)
			fl.NodePowerW(i, at.Add(2*time.Second), time.Second)
		}
		for _, fa := range cfg.Faults {
			if fa.Kind == FaultHang {
				return // a hung call would block the fuzzer
			}
		}
		clk := newFakeClock(at)
		lib := mustNew(t, cfg, locs[0], clk.now)
		clk.add(1500 * time.Millisecond)
		for g := range 8 {
			d := dev(t, lib, g)
			d.GetFieldValues([]nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}, {FieldId: nvml.FI_DEV_MEMORY_TEMP}})
			d.GetPowerUsage()
			d.GetTemperature(nvml.TEMPERATURE_GPU)
			d.GetClockInfo(nvml.CLOCK_SM)
			d.GetUtilizationRates()
			d.GetCurrentClocksEventReasons()
		}
	})
}
