package aggregate

import (
	"errors"
	"github.com/megawatch/megawatch/internal/plausible"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// TestImplausibleNeverSummed: reports carrying the values an outside test
// got into InfluxDB — a GPU at 4,294,967.295 W (wrapped uint32), the 8-GPU
// node it made 4,298,224.755 W, a 10,000,000 W slot, an int64 −1000 read as
// uint32 milliwatts, a wrapped node power — are refused with
// ErrImplausible, and the site's sum is that of the plausible nodes alone.
func TestImplausibleNeverSummed(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	f := newFleet(t, topo)
	a, err := New(testConfig(), topo)
	if err != nil {
		t.Fatal(err)
	}
	end := testEpoch.Add(time.Second)
	rs := reports(t, topo, f, end, nil)
	mutations := []func(r *telemetry.NodeReport){
		func(r *telemetry.NodeReport) { r.Gpus[3].PowerMw = proto.Uint32(0xffffffff) },
		func(r *telemetry.NodeReport) {
			r.Gpus[0].PowerMw = proto.Uint32(0xffffffff)
			for _, g := range r.Gpus[1:] {
				g.PowerMw = proto.Uint32(465_351) // the node: 4,298,224.752 W
			}
		},
		func(r *telemetry.NodeReport) { r.SlotPowerW[4] = 10_000_000 },
		func(r *telemetry.NodeReport) { v := int64(-1000); r.Gpus[5].PowerMw = proto.Uint32(uint32(v)) },
		func(r *telemetry.NodeReport) { r.NodePowerMw = proto.Uint32(0xffffffff) },
		func(r *telemetry.NodeReport) { r.Gpus[2].TempC = proto.Int32(5000) },
	}
	var good []encoded
	for i, e := range rs {
		if i >= len(mutations) {
			good = append(good, e)
			if err := a.HandleReport(e.subject, e.data); err != nil {
				t.Fatalf("%s: %v", e.subject, err)
			}
			continue
		}
		var r telemetry.NodeReport
		if err := proto.Unmarshal(e.data, &r); err != nil {
			t.Fatal(err)
		}
		mutations[i](&r)
		data, _ := proto.Marshal(&r)
		if err := a.HandleReport(e.subject, data); !errors.Is(err, ErrImplausible) {
			t.Errorf("mutation %d: HandleReport = %v, want ErrImplausible", i, err)
		}
	}
	if s := a.Stats(); s.Implausible != uint64(len(mutations)) || s.Decode != 0 {
		t.Errorf("stats %+v: want %d implausible, 0 decode errors", s, len(mutations))
	}
	wantP, _ := nodeSums(t, topo, good)
	st := a.Tick(end)
	for _, d := range topo.Domains() {
		if got := st[d.ID].PowerW; !near(got, wantP[d.Key()], 1e-6*wantP[d.Key()]+1e-9) {
			t.Errorf("%s: power %.3f W, plausible nodes sum %.3f W", d.Key(), got, wantP[d.Key()])
		}
		if st[d.ID].PowerW > d.CapacityW {
			t.Errorf("%s: %.0f W beyond its capacity %.0f W", d.Key(), st[d.ID].PowerW, d.CapacityW)
		}
	}
}

// TestConfiguredBounds: the aggregator takes its bounds from its config.
func TestConfiguredBounds(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	f := newFleet(t, topo)
	cfg := testConfig()
	cfg.Plausible = plausible.Default()
	cfg.Plausible.GPUMaxW = 1 // every real GPU reading is now beyond it
	a, err := New(cfg, topo)
	if err != nil {
		t.Fatal(err)
	}
	e := reports(t, topo, f, testEpoch.Add(time.Second), nil)[0]
	if err := a.HandleReport(e.subject, e.data); !errors.Is(err, ErrImplausible) {
		t.Fatalf("HandleReport with gpu_max_w 1 = %v, want ErrImplausible", err)
	}
}

// TestCheckReportMsgID: the aggregator's forged-Msg-Id check reads node and
// window from the payload.
func TestCheckReportMsgID(t *testing.T) {
	end := testEpoch.Add(time.Second)
	data, _ := proto.Marshal(&telemetry.NodeReport{Node: "n1", WindowEndUnixNs: end.UnixNano(), Gpus: []*telemetry.Gpu{{Index: 1}}})
	for id, ok := range map[string]bool{
		"": true, telemetry.MsgID("n1", end.UnixNano()): true, telemetry.MsgID("n1", end.UnixNano()) + ":00112233445566ff": true,
		telemetry.MsgID("n1", end.Add(time.Second).UnixNano()): false, telemetry.MsgID("n2", end.UnixNano()): false,
	} {
		if err := CheckReportMsgID(data, id); (err == nil) != ok || (err != nil && !errors.Is(err, ErrForgedID)) {
			t.Errorf("CheckReportMsgID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
	id := telemetry.MsgID("n1", end.UnixNano())
	if n := testing.AllocsPerRun(100, func() { _ = CheckReportMsgID(data, id) }); n != 0 {
		t.Errorf("CheckReportMsgID allocates %v times", n)
	}
}
