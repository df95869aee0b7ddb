package ingest

import (
	"fmt"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// checkDecodeLikeProto fails unless reportDecoder accepts exactly what
// proto.Unmarshal accepts and yields the same message (unknown fields aside).
func checkDecodeLikeProto(t *testing.T, d *reportDecoder, data []byte) {
	t.Helper()
	var want telemetry.NodeReport
	werr := proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &want)
	got, err := d.decode(data)
	if (err != nil) != (werr != nil) {
		t.Fatalf("decode error %v, proto.Unmarshal error %v, input %x", err, werr, data)
	}
	if err == nil && !proto.Equal(got, &want) {
		t.Fatalf("decode differs from proto.Unmarshal:\n got %v\nwant %v", got, &want)
	}
}

func TestDecodeReportLikeProto(t *testing.T) {
	d := newReportDecoder()
	locs := make([]telemetry.Location, 20)
	for i := range locs {
		locs[i] = telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: fmt.Sprintf("n%d", i)}
	}
	fleet := newFleet(t, locs)
	var rep telemetry.NodeReport
	for w := range 70 { // past the 60th report: uuid, model and version too
		for i := range locs {
			fleet.Report(&rep, i, time.Unix(1_700_000_000+int64(w), 0), time.Second, 100*time.Millisecond)
			data, _ := proto.Marshal(&rep)
			checkDecodeLikeProto(t, d, data)
		}
	}
	full, _ := proto.Marshal(testReport(testLoc(3), 9, time.Unix(1_700_000_000, 0), 8))
	lost, _ := proto.Marshal(&telemetry.NodeReport{Node: "n", Gpus: []*telemetry.Gpu{{Index: 3, Health: telemetry.Health_HEALTH_LOST, Error: "GPU is lost"}}, Replayed: true, BootId: 7})
	np := testReport(testLoc(4), 9, time.Unix(1_700_000_000, 0), 8)
	np.NodePowerMw, np.NodePowerSource, np.CpuPowerMw, np.NodeEnergyMj = u32(6_123_456), telemetry.NodePowerSource_NODE_POWER_REDFISH, u32(812_000), u64(1<<40+7)
	nodePower, _ := proto.Marshal(np)
	zeroPower, _ := proto.Marshal(&telemetry.NodeReport{Node: "z", NodePowerMw: u32(0), NodePowerSource: telemetry.NodePowerSource(42), CpuPowerMw: u32(0), NodeEnergyMj: u64(0)})
	cases := [][]byte{
		full, lost, nil, nodePower, zeroPower, // node power fields 16-19 (present at 0 is not absent; unknown enum values kept)
		protowire.AppendBytes(protowire.AppendTag(nil, 16, protowire.BytesType), []byte{1}),                                                                                   // node_power_mw with a wrong wire type
		protowire.AppendVarint(protowire.AppendTag(nil, 17, protowire.VarintType), 1<<63),                                                                                     // huge enum value truncated like proto
		protowire.AppendTag(nil, 9, protowire.VarintType),                                                                                                                     // truncated
		append(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 5), protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 6)...), // unpacked slots
		protowire.AppendBytes(protowire.AppendTag(nil, 5, protowire.BytesType), []byte{0xff, 0xfe}),                                                                           // invalid UTF-8
		protowire.AppendVarint(protowire.AppendTag(nil, 5, protowire.VarintType), 3),                                                                                          // node with a wrong wire type
		protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 3),                                                                                         // unknown field
		protowire.AppendBytes(protowire.AppendTag(nil, 10, protowire.BytesType), []byte{0x0a, 1, 0xff}),                                                                       // gpu uuid bad UTF-8
		append(full, full...), // concatenation merges: last scalar wins, repeated fields append
	}
	for _, c := range cases {
		checkDecodeLikeProto(t, d, c)
	}
}

// FuzzDecodeReport: reportDecoder agrees with proto.Unmarshal
// on every input, valid or not.
func FuzzDecodeReport(f *testing.F) {
	r, _ := proto.Marshal(testReport(testLoc(1), 7, time.Unix(1_700_000_000, 0), 8))
	f.Add(r)
	f.Add([]byte{0x52, 0x02, 0x08, 0x01})
	np := testReport(testLoc(2), 8, time.Unix(1_700_000_000, 0), 4)
	np.NodePowerMw, np.NodePowerSource, np.CpuPowerMw, np.NodeEnergyMj = u32(3_000_000), telemetry.NodePowerSource_NODE_POWER_MODEL, u32(400_000), u64(99)
	b, _ := proto.Marshal(np)
	f.Add(b)
	d := newReportDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeLikeProto(t, d, data)
	})
}

func BenchmarkDecodeReport(b *testing.B) {
	data, _ := proto.Marshal(testReport(testLoc(1), 7, time.Unix(1_700_000_000, 0), 8))
	b.Run("decoder=megawatch", func(b *testing.B) {
		d := newReportDecoder()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder=proto.Unmarshal", func(b *testing.B) {
		var r telemetry.NodeReport
		b.ReportAllocs()
		for b.Loop() {
			if err := proto.Unmarshal(data, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDecoderDropsFreakBuffers: after a message with thousands of GPUs and
// slots, the next decode no longer holds buffers of that size.
func TestDecoderDropsFreakBuffers(t *testing.T) {
	d := newReportDecoder()
	big := &telemetry.NodeReport{Node: "n1", SlotPowerW: make([]uint32, 100_000)}
	for i := range 5000 {
		big.Gpus = append(big.Gpus, &telemetry.Gpu{Index: uint32(i)})
	}
	data, _ := proto.Marshal(big)
	checkDecodeLikeProto(t, d, data)
	small, _ := proto.Marshal(testReport(testLoc(1), 1, time.Unix(1_700_000_000, 0), 8))
	checkDecodeLikeProto(t, d, small)
	if len(d.slots) > maxKeptGpus || cap(d.gpus) > maxKeptGpus || cap(d.r.SlotPowerW) > maxKeptSlots {
		t.Errorf("decoder keeps %d gpu slots, %d gpu pointers, %d slot values", len(d.slots), cap(d.gpus), cap(d.r.SlotPowerW))
	}
}
