package sim

import (
	"math"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// faultConfig injects one fault of each kind on GPUs 1..7 of testLoc.
func faultConfig() Config {
	cfg := DefaultConfig()
	cfg.Epoch = t0
	cfg.Faults = []Fault{
		{Node: testLoc.Node, Kind: FaultLost, GPU: 1, From: 10 * time.Second, Until: 20 * time.Second},
		{Node: "hall=h1", Kind: FaultNotSupported, GPU: 2, Field: FieldMemTemp},
		{Node: "*", Kind: FaultNotSupported, GPU: 3, Field: FieldPowerInstant},
		{Kind: FaultNotSupported, GPU: 4, Field: FieldEnergy},
		{Kind: FaultHang, GPU: 5, From: 10 * time.Second},
		{Kind: FaultHang, GPU: 6, Field: FieldEnergy, Hang: 20 * time.Millisecond},
		{Kind: FaultEnergyReset, GPU: 7, From: 10 * time.Second},
		{Node: "other-node", Kind: FaultLost, GPU: -1}, // matches nothing here
	}
	return cfg
}

func fieldReturns(d nvml.Device, ids ...uint32) (nvml.Return, []nvml.Return) {
	fv := make([]nvml.FieldValue, len(ids))
	for i, id := range ids {
		fv[i].FieldId = id
	}
	ret := d.GetFieldValues(fv)
	out := make([]nvml.Return, len(fv))
	for i := range fv {
		out[i] = nvml.Return(fv[i].NvmlReturn)
	}
	return ret, out
}

func TestFaultsNVML(t *testing.T) {
	clk := newFakeClock(t0.Add(5 * time.Second))
	lib := mustNew(t, faultConfig(), testLoc, clk.now)
	t.Cleanup(func() { lib.Shutdown() })

	t.Run("lost", func(t *testing.T) {
		d := dev(t, lib, 1)
		for _, tc := range []struct {
			at   time.Duration
			want nvml.Return
		}{{5 * time.Second, nvml.SUCCESS}, {15 * time.Second, nvml.ERROR_GPU_IS_LOST}, {25 * time.Second, nvml.SUCCESS}} {
			clk.t = t0.Add(tc.at)
			_, r1 := d.GetPowerUsage()
			_, r2 := d.GetUUID()
			_, r3 := d.GetTemperature(nvml.TEMPERATURE_GPU)
			r4, _ := fieldReturns(d, nvml.FI_DEV_POWER_INSTANT)
			_, r5 := d.GetTotalEnergyConsumption()
			for _, r := range []nvml.Return{r1, r2, r3, r4, r5} {
				if r != tc.want {
					t.Errorf("at %v: %v, want %v", tc.at, r, tc.want)
				}
			}
		}
		clk.t = t0.Add(5 * time.Second)
		if _, r := dev(t, lib, 0).GetPowerUsage(); r != nvml.SUCCESS {
			t.Errorf("GPU 0 affected: %v", r)
		}
	})

	t.Run("not supported", func(t *testing.T) {
		_, rs := fieldReturns(dev(t, lib, 2), nvml.FI_DEV_POWER_INSTANT, nvml.FI_DEV_MEMORY_TEMP)
		if rs[0] != nvml.SUCCESS || rs[1] != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("GPU 2 mem_temp: %v", rs)
		}
		_, rs = fieldReturns(dev(t, lib, 3), nvml.FI_DEV_POWER_INSTANT, nvml.FI_DEV_MEMORY_TEMP)
		if rs[0] != nvml.ERROR_NOT_SUPPORTED || rs[1] != nvml.SUCCESS {
			t.Errorf("GPU 3 power_instant: %v", rs)
		}
		if _, r := dev(t, lib, 3).GetPowerUsage(); r != nvml.SUCCESS {
			t.Errorf("GPU 3 GetPowerUsage: %v", r)
		}
		if _, r := dev(t, lib, 4).GetTotalEnergyConsumption(); r != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("GPU 4 energy: %v", r)
		}
		if _, rs := fieldReturns(dev(t, lib, 4), nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION); rs[0] != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("GPU 4 energy field: %v", rs)
		}
		if _, rs := fieldReturns(dev(t, lib, 0), 9999); rs[0] != nvml.ERROR_NOT_SUPPORTED {
			t.Errorf("unknown field: %v", rs)
		}
	})

	t.Run("hang for a duration", func(t *testing.T) {
		d := dev(t, lib, 6)
		if _, r := d.GetTemperature(nvml.TEMPERATURE_GPU); r != nvml.SUCCESS {
			t.Errorf("temperature: %v", r)
		}
		if _, r := d.GetTotalEnergyConsumption(); r != nvml.SUCCESS { // returns after 20 ms
			t.Errorf("energy: %v", r)
		}
	})

	t.Run("energy reset", func(t *testing.T) {
		d := dev(t, lib, 7)
		clk.t = t0.Add(5 * time.Second)
		prev, _ := d.GetTotalEnergyConsumption()
		drops := 0
		for range 100 { // 5 s .. 15 s
			clk.add(100 * time.Millisecond)
			e, _ := d.GetTotalEnergyConsumption()
			if e < prev {
				drops++
				if e > 100_000 { // 100 J: at most a fraction of a second of power
					t.Errorf("after the reset the counter reads %d mJ", e)
				}
			}
			prev = e
		}
		if drops != 1 {
			t.Errorf("counter went back %d times, want once", drops)
		}
	})

	t.Run("hang until released", func(t *testing.T) {
		clk.t = t0.Add(15 * time.Second)
		d := dev(t, lib, 5)
		done := make(chan nvml.Return)
		go func() {
			_, r := d.GetTemperature(nvml.TEMPERATURE_GPU)
			done <- r
		}()
		select {
		case r := <-done:
			t.Fatalf("hung call returned %v before release", r)
		case <-time.After(50 * time.Millisecond):
		}
		lib.ReleaseHangs()
		if r := <-done; r != nvml.SUCCESS {
			t.Errorf("released call: %v", r)
		}
	})
}

func TestFaultsFleet(t *testing.T) {
	cfg := faultConfig()
	cfg.Faults = cfg.Faults[:len(cfg.Faults)-2] // keep the energy reset and the other node out
	cfg.Faults = append(cfg.Faults, Fault{Kind: FaultEnergyReset, GPU: 7, From: 10*time.Second + 500*time.Millisecond})
	f, err := NewFleet(cfg, []telemetry.Location{testLoc})
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	var epoch7 uint32
	for s := 1; s <= 15; s++ {
		f.Report(&rep, 0, t0.Add(time.Duration(s)*time.Second), time.Second, 100*time.Millisecond)
		if s == 10 {
			epoch7 = rep.Gpus[7].GetEnergyEpoch()
		}
	}
	g := rep.Gpus
	if g[1].Health != telemetry.Health_HEALTH_LOST || g[1].PowerMw != nil || g[1].Error == "" {
		t.Errorf("lost GPU: %v", g[1])
	}
	if g[5].Health != telemetry.Health_HEALTH_TIMEOUT || g[5].PowerMw != nil {
		t.Errorf("hung GPU: %v", g[5])
	}
	if g[2].MemTempC != nil || g[2].TempC == nil {
		t.Errorf("GPU 2 without mem_temp: %v", g[2])
	}
	if g[4].EnergyMj != nil || g[4].PowerMw == nil {
		t.Errorf("GPU 4 without energy: %v", g[4])
	}
	if g[7].GetEnergyEpoch() != epoch7+1 || g[7].GetEnergyMj() > 10_000_000 {
		t.Errorf("GPU 7 after reset: epoch %d (was %d), energy %d", g[7].GetEnergyEpoch(), epoch7, g[7].GetEnergyMj())
	}
	// Sums leave out lost and hung GPUs.
	sum := 0.0
	for _, gpu := range g {
		if gpu.PowerMw != nil {
			sum += telemetry.MilliwattsToW(gpu.GetPowerMw())
		}
	}
	if np := f.NodePowerW(0, t0.Add(15*time.Second), time.Second); math.Abs(np-sum)/sum > 0.01 {
		t.Errorf("NodePowerW %.3f, sum of reported GPUs %.3f", np, sum)
	}
	slots := 0.0
	for _, p := range rep.SlotPowerW {
		slots += float64(p) / float64(len(rep.SlotPowerW))
	}
	if math.Abs(slots-sum)/sum > 0.05 {
		t.Errorf("mean slot power %.0f W, mean power %.0f W", slots, sum)
	}
}
