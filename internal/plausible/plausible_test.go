package plausible

import (
	"errors"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/internal/telemetry"
)

func u32(v uint32) *uint32 { return &v }
func i32(v int32) *int32   { return &v }

// node8 is a plausible 8-GPU node: 465.5 W per GPU under a 700 W limit.
func node8() *telemetry.NodeReport {
	r := &telemetry.NodeReport{Node: "n1", NodePowerMw: u32(6_500_000), CpuPowerMw: u32(700_000)}
	for i := range 8 {
		r.Gpus = append(r.Gpus, &telemetry.Gpu{Index: uint32(i), PowerMw: u32(465_500), PowerMinMw: u32(300_000), PowerMaxMw: u32(900_000),
			PowerLimitMw: u32(700_000), TempC: i32(61), MemTempC: i32(70)})
	}
	for range 10 {
		r.SlotPowerW = append(r.SlotPowerW, 3724)
	}
	return r
}

// TestCheckReport: the values an outside fault-injection test got into
// InfluxDB (a wrapped uint32 GPU, the 8-GPU node it made 4,298,224.755 W,
// a 10,000,000 W slot, an int64 −1000 read as uint32 milliwatts) are each
// named as implausible; a real node and its edge cases are not.
func TestCheckReport(t *testing.T) {
	b := Default()
	f := func(name, field string, mutate func(r *telemetry.NodeReport)) {
		t.Helper()
		r := node8()
		mutate(r)
		err := b.CheckReport(r)
		if field == "" {
			if err != nil {
				t.Errorf("%s: %v, want plausible", name, err)
			}
			return
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Field != field {
			t.Errorf("%s: got %v, want an implausible %s", name, err, field)
		}
	}
	f("real node", "", func(*telemetry.NodeReport) {})
	f("wrapped uint32 gpu 4,294,967.295 W", "gpus[3].power_mw", func(r *telemetry.NodeReport) {
		r.Gpus[3].PowerMw = u32(0xffffffff) // sum of the node: 7×465.5 + 4,294,967.295 = 4,298,225.795 W
	})
	f("node summed to 4,298,224.755 W", "gpus[0].power_mw", func(r *telemetry.NodeReport) {
		r.Gpus[0].PowerMw = u32(4_294_967_295) // one wrapped GPU carries the node ...
		for _, g := range r.Gpus[1:] {
			g.PowerMw = u32(465_351) // ... and 7 real ones: 4,298,224.752 W in all
		}
	})
	f("10,000,000 W slot", "slot_power_w[4]", func(r *telemetry.NodeReport) { r.SlotPowerW[4] = 10_000_000 })
	f("int64 -1000 wrapped to 4,294,966.296 W", "gpus[5].power_mw", func(r *telemetry.NodeReport) {
		v := int64(-1000)
		r.Gpus[5].PowerMw = u32(uint32(v))
	})
	f("wrapped power_max", "gpus[2].power_max_mw", func(r *telemetry.NodeReport) { r.Gpus[2].PowerMaxMw = u32(0xfffffff0) })
	f("4x the enforced limit", "gpus[1].power_mw", func(r *telemetry.NodeReport) { r.Gpus[1].PowerMw = u32(2_800_000) })
	f("peak 1.3x the limit", "", func(r *telemetry.NodeReport) { r.Gpus[1].PowerMaxMw = u32(910_000) })
	f("no limit reported: absolute ceiling only", "", func(r *telemetry.NodeReport) {
		r.Gpus[1].PowerLimitMw, r.Gpus[1].PowerMw = nil, u32(2_500_000)
	})
	f("wrapped limit", "gpus[6].power_limit_mw", func(r *telemetry.NodeReport) { r.Gpus[6].PowerLimitMw = u32(0xffffffff) })
	f("lost GPU's garbage is not summed, not checked", "", func(r *telemetry.NodeReport) {
		r.Gpus[4].Health, r.Gpus[4].PowerMw = telemetry.Health_HEALTH_LOST, u32(0xffffffff)
	})
	f("node power wrapped", "node_power_mw", func(r *telemetry.NodeReport) { r.NodePowerMw = u32(0xffffffff) })
	f("node power beyond GPUs + host", "node_power_mw", func(r *telemetry.NodeReport) { r.NodePowerMw = u32(30_000_000) })
	f("node power at GPUs' draw + 4 kW host", "", func(r *telemetry.NodeReport) { r.NodePowerMw = u32(8*700_000*3/3 + 4_000_000) })
	f("cpu power wrapped", "cpu_power_mw", func(r *telemetry.NodeReport) { r.CpuPowerMw = u32(0xffffffff) })
	f("temperature 4 billion", "gpus[0].temp_c", func(r *telemetry.NodeReport) { r.Gpus[0].TempC = i32(-1 << 31) })
	f("HBM at 1000 C", "gpus[7].mem_temp_c", func(r *telemetry.NodeReport) { r.Gpus[7].MemTempC = i32(1000) })
	f("cold aisle -10 C", "", func(r *telemetry.NodeReport) { r.Gpus[7].TempC = i32(-10) })
	f("slots without gpus: node ceiling", "", func(r *telemetry.NodeReport) { r.Gpus = nil; r.NodePowerMw = nil })
	if err := b.CheckReport(node8()); err != nil {
		t.Fatal(err)
	}
	r := node8()
	r.Gpus[3].PowerMw = u32(0xffffffff)
	if msg := b.CheckReport(r).Error(); !strings.Contains(msg, "4294967.295") || !strings.Contains(msg, "gpus[3].power_mw") {
		t.Errorf("error %q should name the field and value", msg)
	}
}

func TestValidate(t *testing.T) {
	if err := Default().Validate("plausible"); err != nil {
		t.Fatal(err)
	}
	b := Bounds{GPULimitFactor: 0.5, HostAllowanceW: -1, MinTempC: 10, MaxTempC: 5}
	err := b.Validate("plausible")
	for _, key := range []string{"plausible.gpu_max_w", "plausible.gpu_limit_factor", "plausible.host_allowance_w", "plausible.node_max_w", "plausible.min_temp_c"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("Validate: %v, want a problem with %s", err, key)
		}
	}
}

func TestCheckReportAllocatesNothing(t *testing.T) {
	b, r := Default(), node8()
	if n := testing.AllocsPerRun(100, func() { _ = b.CheckReport(r) }); n != 0 {
		t.Errorf("CheckReport allocates %v times per plausible report", n)
	}
}
