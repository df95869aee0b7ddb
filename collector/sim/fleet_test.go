package sim

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// TestFleetMatchesNVML: a Fleet node and an NVML node with the same config
// report the same power, per GPU and per slot.
func TestFleetMatchesNVML(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Epoch = t0
	cfg.Jobs[0].Ramp = 0
	start := t0.Add(time.Minute)
	clk := newFakeClock(start)
	lib := mustNew(t, cfg, testLoc, clk.now)
	f, err := NewFleet(cfg, []telemetry.Location{testLoc})
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	prev := make([]uint64, 8)
	for g := range 8 {
		prev[g], _ = dev(t, lib, g).GetTotalEnergyConsumption()
	}
	f.Report(&rep, 0, start, time.Second, 100*time.Millisecond)
	for s := 1; s <= 5; s++ {
		end := start.Add(time.Duration(s) * time.Second)
		var slots [10]float64
		for j := range 10 { // the collector samples each slot; Fleet takes slot midpoints
			clk.t = end.Add(-time.Second + time.Duration(j)*100*time.Millisecond + 50*time.Millisecond)
			for g := range 8 {
				slots[j] += instantW(t, dev(t, lib, g))
			}
		}
		clk.t = end
		f.Report(&rep, 0, end, time.Second, 100*time.Millisecond)
		for g := range 8 {
			e, _ := dev(t, lib, g).GetTotalEnergyConsumption()
			nv := float64(e-prev[g]) / 1000
			prev[g] = e
			fl := telemetry.MilliwattsToW(rep.Gpus[g].GetPowerMw())
			if math.Abs(nv-fl)/fl > 0.01 {
				t.Errorf("second %d GPU %d: NVML %.1f W, Fleet %.1f W", s, g, nv, fl)
			}
			if tc, _ := dev(t, lib, g).GetTemperature(nvml.TEMPERATURE_GPU); math.Abs(float64(int32(tc)-rep.Gpus[g].GetTempC())) > 1 {
				t.Errorf("second %d GPU %d: NVML %d °C, Fleet %d °C", s, g, tc, rep.Gpus[g].GetTempC())
			}
		}
		for j, p := range rep.SlotPowerW {
			if math.Abs(float64(p)-slots[j])/slots[j] > 0.01 {
				t.Errorf("second %d slot %d: NVML %.0f W, Fleet %d W", s, j, slots[j], p)
			}
		}
	}
}

func TestFleetReport(t *testing.T) {
	f, err := NewFleet(DefaultConfig(), benchNodes(3))
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	end := t0
	for s := 1; s <= 61; s++ {
		end = t0.Add(time.Duration(s) * time.Second)
		f.Report(&rep, 2, end, time.Second, 100*time.Millisecond)
		inventory := s == 1 || s == 61
		if rep.Seq != uint64(s) || (rep.Gpus[0].Uuid != "") != inventory || (rep.Gpus[7].Model != "") != inventory {
			t.Fatalf("report %d: seq %d uuid %q model %q", s, rep.Seq, rep.Gpus[0].Uuid, rep.Gpus[7].Model)
		}
		if size := proto.Size(&rep); !inventory && size > 400 {
			t.Errorf("report %d is %d bytes, want ≤ 400", s, size)
		}
	}
	if loc := telemetry.ReportLocation(&rep); loc != benchNodes(3)[2] {
		t.Errorf("location %v", loc)
	}
	if rep.WindowEndUnixNs != end.UnixNano() || rep.WindowMs != 1000 || rep.SlotMs != 100 || len(rep.SlotPowerW) != 10 || len(rep.Gpus) != 8 {
		t.Errorf("header: %v", &rep)
	}
	sum := 0.0
	for g, gpu := range rep.Gpus {
		if gpu.Index != uint32(g) || gpu.PowerMw == nil || gpu.EnergyMj == nil || gpu.TempC == nil || gpu.MemTempC == nil ||
			gpu.PowerLimitMw == nil || gpu.SmClockMhz == nil || gpu.UtilPct == nil || gpu.ThrottleReasons == nil {
			t.Errorf("GPU %d lacks a field: %v", g, gpu)
		}
		if gpu.GetPowerMinMw() > gpu.GetPowerMw() || gpu.GetPowerMw() > gpu.GetPowerMaxMw() {
			t.Errorf("GPU %d: min %d mean %d max %d", g, gpu.GetPowerMinMw(), gpu.GetPowerMw(), gpu.GetPowerMaxMw())
		}
		sum += telemetry.MilliwattsToW(gpu.GetPowerMw())
	}
	if np := f.NodePowerW(2, end, time.Second); math.Abs(np-sum) > 0.01 {
		t.Errorf("NodePowerW %.3f, sum %.3f", np, sum)
	}
	// A window not reported yet is simulated on a copy and does not advance the node.
	next := end.Add(time.Second)
	want := f.NodePowerW(2, next, time.Second)
	f.Report(&rep, 2, next, time.Second, 100*time.Millisecond)
	sum = 0
	for _, gpu := range rep.Gpus {
		sum += telemetry.MilliwattsToW(gpu.GetPowerMw())
	}
	if math.Abs(want-sum) > 0.01 {
		t.Errorf("NodePowerW ahead %.3f, reported %.3f", want, sum)
	}
	if f.Len() != 3 {
		t.Errorf("Len %d", f.Len())
	}
}

// TestConcurrent runs under -race: Fleet nodes in parallel, and the NVML
// devices of one node from several goroutines.
func TestConcurrent(t *testing.T) {
	f, err := NewFleet(DefaultConfig(), benchNodes(8))
	if err != nil {
		t.Fatal(err)
	}
	lib := mustNew(t, DefaultConfig(), testLoc, time.Now)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			var rep telemetry.NodeReport
			for s := range 20 {
				end := t0.Add(time.Duration(s) * time.Second)
				f.Report(&rep, i, end, time.Second, 100*time.Millisecond)
				f.NodePowerW(i, end, time.Second)
			}
		})
		wg.Go(func() {
			d := dev(t, lib, i)
			for range 200 {
				instantW(t, d)
				d.GetTotalEnergyConsumption()
				d.GetPowerUsage()
			}
		})
		wg.Go(func() {
			d := dev(t, lib, 0)
			for range 200 {
				d.GetTemperature(nvml.TEMPERATURE_GPU)
				d.GetCurrentClocksEventReasons()
			}
		})
	}
	wg.Wait()
}

func TestB200(t *testing.T) {
	cfg := quietConfig()
	cfg.Model = "dgxb200"
	clk := newFakeClock(t0.Add(time.Minute + 500*time.Millisecond))
	lib := mustNew(t, cfg, testLoc, clk.now)
	d := dev(t, lib, 0)
	name, _ := d.GetName()
	limit, _ := d.GetEnforcedPowerLimit()
	if p := instantW(t, d); name != "NVIDIA B200 180GB HBM3e" || limit != 1_000_000 || p != 950 {
		t.Errorf("B200: %q limit %d mW power %.1f W", name, limit, p)
	}
	n, _ := lib.DeviceGetCount()
	if n != 8 {
		t.Errorf("%d GPUs", n)
	}
	uuid, _ := d.GetUUID()
	if h, r := lib.DeviceGetHandleByUUID(uuid); r != nvml.SUCCESS || h != d {
		t.Errorf("DeviceGetHandleByUUID: %v", r)
	}
	if _, r := lib.DeviceGetHandleByIndex(8); r != nvml.ERROR_INVALID_ARGUMENT {
		t.Errorf("index 8: %v", r)
	}
}
