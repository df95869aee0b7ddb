package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

func benchNodes(n int) []telemetry.Location {
	locs := make([]telemetry.Location, n)
	for i := range locs {
		rack := fmt.Sprintf("r%02d", i/18)
		locs[i] = telemetry.Location{Site: "dc1", Hall: "h1", Row: "w01", Rack: rack, Node: fmt.Sprintf("gpu-h1-%s-n%02d", rack, i%18+1)}
	}
	return locs
}

// BenchmarkFleetReport measures one node report (8 GPUs, 1 s window, 10
// slots); target ≤ 20 µs CPU.
func BenchmarkFleetReport(b *testing.B) {
	const nodes = 1000
	f, err := NewFleet(DefaultConfig(), benchNodes(nodes))
	if err != nil {
		b.Fatal(err)
	}
	var rep telemetry.NodeReport
	end := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	for i := range nodes { // initialise every node
		f.Report(&rep, i, end, time.Second, 100*time.Millisecond)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%nodes == 0 {
			end = end.Add(time.Second)
		}
		f.Report(&rep, i%nodes, end, time.Second, 100*time.Millisecond)
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
	b.ReportMetric(float64(proto.Size(&rep)), "bytes/report")
}

// BenchmarkDeviceReads measures the NVML path: one 100 ms sample
// (FI_DEV_POWER_INSTANT) of all 8 GPUs.
func BenchmarkDeviceReads(b *testing.B) {
	clk := newFakeClock(time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC))
	lib, err := New(DefaultConfig(), benchNodes(1)[0], clk.now)
	if err != nil {
		b.Fatal(err)
	}
	devs := make([]nvml.Device, 8)
	for g := range devs {
		devs[g], _ = lib.DeviceGetHandleByIndex(g)
	}
	fv := make([]nvml.FieldValue, 1)
	b.ReportAllocs()
	for b.Loop() {
		clk.add(100 * time.Millisecond)
		for _, d := range devs {
			fv[0].FieldId = nvml.FI_DEV_POWER_INSTANT
			d.GetFieldValues(fv)
		}
	}
}
