package sim

import (
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/telemetry"
)

var testLoc = telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "gpu-h1-k01-n01"}

// fakeClock is a settable clock; tests that share one across goroutines
// only read it.
type fakeClock struct{ t time.Time }

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }
func (c *fakeClock) now() time.Time       { return c.t }
func (c *fakeClock) add(d time.Duration)  { c.t = c.t.Add(d) }

func mustNew(t testing.TB, cfg Config, loc telemetry.Location, clock func() time.Time) *Driver {
	t.Helper()
	lib, err := New(cfg, loc, clock)
	if err != nil {
		t.Fatal(err)
	}
	return lib.(*Driver)
}

func dev(t testing.TB, lib nvml.Interface, i int) nvml.Device {
	t.Helper()
	d, ret := lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		t.Fatalf("DeviceGetHandleByIndex(%d): %v", i, ret)
	}
	return d
}
