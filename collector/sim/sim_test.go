package sim

import (
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/telemetry"
)

var testLoc = telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "gpu-h1-k01-n01"}

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time       { return c.t }
func (c *fakeClock) add(d time.Duration)  { c.t = c.t.Add(d) }
func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func mustNew(t *testing.T, cfg Config, loc telemetry.Location, clock func() time.Time) *Driver {
	t.Helper()
	lib, err := New(cfg, loc, clock)
	if err != nil {
		t.Fatal(err)
	}
	return lib.(*Driver)
}

func dev(t *testing.T, lib nvml.Interface, i int) nvml.Device {
	t.Helper()
	d, ret := lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		t.Fatalf("DeviceGetHandleByIndex(%d): %v", i, ret)
	}
	return d
}

func TestSmoke(t *testing.T) {
	clk := newFakeClock(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC))
	lib := mustNew(t, DefaultConfig(), testLoc, clk.now)
	if ret := lib.Init(); ret != nvml.SUCCESS {
		t.Fatal(ret)
	}
	n, _ := lib.DeviceGetCount()
	for i := range n {
		d := dev(t, lib, i)
		clk.add(100 * time.Millisecond)
		p, _ := d.GetPowerUsage()
		e, _ := d.GetTotalEnergyConsumption()
		tc, _ := d.GetTemperature(nvml.TEMPERATURE_GPU)
		fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}, {FieldId: nvml.FI_DEV_MEMORY_TEMP}}
		d.GetFieldValues(fv)
		uuid, _ := d.GetUUID()
		name, _ := d.GetName()
		clock, _ := d.GetClockInfo(nvml.CLOCK_SM)
		u, _ := d.GetUtilizationRates()
		r, _ := d.GetCurrentClocksEventReasons()
		l, _ := d.GetEnforcedPowerLimit()
		t.Logf("gpu %d %s %s p=%d e=%d t=%d fv=%v clock=%d util=%v reasons=%x limit=%d", i, uuid, name, p, e, tc, fv, clock, u, r, l)
	}
	f, err := NewFleet(DefaultConfig(), []telemetry.Location{testLoc})
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	end := clk.t.Truncate(time.Second)
	for k := range 3 {
		f.Report(&rep, 0, end.Add(time.Duration(k)*time.Second), time.Second, 100*time.Millisecond)
	}
	t.Logf("%v", &rep)
	t.Logf("node %v", f.NodePowerW(0, end.Add(2*time.Second), time.Second))
}
