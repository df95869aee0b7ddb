package telemetry

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// benchReport is a realistic DGX H100 node report: 8 healthy GPUs around
// 650 W, ten 100 ms slots, every optional field present. inventory adds
// uuid, model and version (the first report and every 60th).
func benchReport(inventory bool) *NodeReport {
	r := &NodeReport{
		Site: "dc1", Hall: "h1", Row: "r01", Rack: "rk01", Node: "gpu-h1-r01-rk01-n01",
		WindowEndUnixNs: time.Date(2026, 11, 27, 1, 2, 3, 0, time.UTC).UnixNano(),
		WindowMs:        1000, SlotMs: 100,
		SlotPowerW: []uint32{5231, 5240, 5198, 2610, 2598, 2605, 5230, 5244, 5219, 5227},
		Seq:        86_400, BootId: 0x9e3779b97f4a7c15,
	}
	if inventory {
		r.Version = "v1.0.0+0123456789ab"
	}
	for i := range 8 {
		g := &Gpu{
			Index:           uint32(i),
			PowerMw:         proto.Uint32(648_250 + uint32(i)*1_337),
			PowerMinMw:      proto.Uint32(318_400 + uint32(i)*911),
			PowerMaxMw:      proto.Uint32(699_800 - uint32(i)*733),
			EnergyMj:        proto.Uint64(41_230_551_873 + uint64(i)*1_000_003),
			TempC:           proto.Int32(61 + int32(i%4)),
			MemTempC:        proto.Int32(67 + int32(i%3)),
			PowerLimitMw:    proto.Uint32(700_000),
			SmClockMhz:      proto.Uint32(1980),
			UtilPct:         proto.Uint32(98),
			ThrottleReasons: proto.Uint64(0),
		}
		if inventory {
			g.Uuid = fmt.Sprintf("GPU-3f1c2a7e-9b4d-4e21-8c5a-%012x", 0x1f2e3d4c5b00+i)
			g.Model = "NVIDIA H100 80GB HBM3"
		}
		r.Gpus = append(r.Gpus, g)
	}
	return r
}

func BenchmarkNodeReportEncode(b *testing.B) {
	for _, inv := range []bool{false, true} {
		b.Run(fmt.Sprintf("inventory=%v", inv), func(b *testing.B) {
			r := benchReport(inv)
			var n int
			buf := make([]byte, 0, 2048)
			b.ReportAllocs()
			for b.Loop() {
				out, err := proto.MarshalOptions{}.MarshalAppend(buf[:0], r)
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			b.ReportMetric(float64(n), "bytes/report")
		})
	}
}

func BenchmarkNodeReportDecode(b *testing.B) {
	for _, inv := range []bool{false, true} {
		b.Run(fmt.Sprintf("inventory=%v", inv), func(b *testing.B) {
			data, err := proto.Marshal(benchReport(inv))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			var r NodeReport
			for b.Loop() {
				proto.Reset(&r)
				if err := proto.Unmarshal(data, &r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes/report")
		})
	}
}

// The baseline DESIGN.md measured protobuf against: the same report as JSON
// (protojson, proto field names), encoded and decoded in the same run.
func BenchmarkNodeReportJSONBaseline(b *testing.B) {
	r := benchReport(false)
	b.Run("encode", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			out, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
			if err != nil {
				b.Fatal(err)
			}
			n = len(out)
		}
		b.ReportMetric(float64(n), "bytes/report")
	})
	b.Run("decode", func(b *testing.B) {
		data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		var out NodeReport
		for b.Loop() {
			proto.Reset(&out)
			if err := protojson.Unmarshal(data, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestBenchReportSize(t *testing.T) {
	b, _ := proto.Marshal(benchReport(false))
	if len(b) > 400 {
		t.Errorf("8-GPU report is %d bytes, the budget is 400", len(b))
	}
}
