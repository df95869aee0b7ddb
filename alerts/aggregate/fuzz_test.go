package aggregate

import (
	"math"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeReport checks the hand-rolled NodeReport decoder against the
// generated protobuf code: it must never panic, and whenever both accept a
// message they must agree on every field the aggregator uses.
func FuzzDecodeReport(f *testing.F) {
	topo := parseTopo(f, pduTopo)
	f.Add(synthReport(topo.Nodes()[0], testEpoch, 1))
	lost := &telemetry.NodeReport{Node: "x", SlotPowerW: []uint32{1, 2}, Gpus: []*telemetry.Gpu{{Health: telemetry.Health_HEALTH_LOST}}}
	b, _ := proto.Marshal(lost)
	f.Add(b)
	np, cpu := uint32(9_500_000), uint32(700_000)
	withNode := &telemetry.NodeReport{Node: "x", NodePowerMw: &np, NodePowerSource: telemetry.NodePowerSource_NODE_POWER_REDFISH, CpuPowerMw: &cpu,
		Gpus: []*telemetry.Gpu{{}}}
	b, _ = proto.Marshal(withNode)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r report
		err := decodeReport(data, &r)
		var m telemetry.NodeReport
		perr := proto.Unmarshal(data, &m)
		if err != nil || perr != nil {
			return
		}
		if string(r.node) != m.GetNode() || string(r.site) != m.GetSite() || string(r.rack) != m.GetRack() ||
			r.windowEndNs != m.GetWindowEndUnixNs() || r.windowMs != m.GetWindowMs() || r.slotMs != m.GetSlotMs() {
			t.Fatalf("header differs: %+v vs %v", r, &m)
		}
		if len(r.slots) != len(m.GetSlotPowerW()) {
			t.Fatalf("slots %v vs %v", r.slots, m.GetSlotPowerW())
		}
		for i := range r.slots {
			if r.slots[i] != m.GetSlotPowerW()[i] {
				t.Fatalf("slot %d: %d vs %d", i, r.slots[i], m.GetSlotPowerW()[i])
			}
		}
		if r.hasNodePower != (m.NodePowerMw != nil) || r.nodePowerMW != uint64(m.GetNodePowerMw()) ||
			r.nodePowerSrc != m.GetNodePowerSource() ||
			r.hasCPUPower != (m.CpuPowerMw != nil) || r.cpuPowerMW != uint64(m.GetCpuPowerMw()) {
			t.Fatalf("node power %v %d src %v cpu %v %d vs %v", r.hasNodePower, r.nodePowerMW, r.nodePowerSrc, r.hasCPUPower, r.cpuPowerMW, &m)
		}
		var mw uint64
		healthy, throttled := 0, 0
		for _, g := range m.GetGpus() {
			if g.GetHealth() != telemetry.Health_HEALTH_OK {
				continue
			}
			healthy++
			mw += uint64(g.GetPowerMw())
			if g.GetThrottleReasons()&ThrottleMask != 0 {
				throttled++
			}
		}
		if r.gpus != len(m.GetGpus()) || r.healthy != healthy || r.powerMW != mw || r.throttled != throttled {
			t.Fatalf("gpus %d/%d healthy %d/%d power %d/%d throttled %d/%d", r.gpus, len(m.GetGpus()), r.healthy, healthy, r.powerMW, mw, r.throttled, throttled)
		}
	})
}

// FuzzHandleRollup feeds arbitrary bytes as hall rollups to a site
// aggregator: no panic, and a tick afterwards stays finite.
func FuzzHandleRollup(f *testing.F) {
	topo := parseTopo(f, pduTopo)
	h, _ := topo.Domain("dc1", "h1")
	ok := &telemetry.Rollup{Level: "hall", Path: h.Path, WindowEndUnixNs: testEpoch.Add(time.Second).UnixNano(), WindowMs: 1000, SlotMs: 100,
		PowerW: 1e5, PowerEstW: 1.1e5, SlotPowerW: make([]float64, 10), NodesReporting: 20, NodesExpected: 24, StaleNodes: 4}
	b, _ := proto.Marshal(ok)
	f.Add(b)
	f.Add([]byte("\x0a\x04hall"))
	for _, c := range []float64{1e300, math.NaN(), math.Inf(-1), -5e4} {
		bad := proto.Clone(ok).(*telemetry.Rollup)
		bad.ContinuityDeltaW = &c
		bb, _ := proto.Marshal(bad)
		f.Add(bb)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := testConfig()
		cfg.FromHalls = true
		a, err := New(cfg, topo)
		if err != nil {
			t.Fatal(err)
		}
		_ = a.HandleRollup(data)
		_ = a.HandleRollup(b)
		st := a.Tick(testEpoch.Add(time.Second))[0]
		if !(st.PowerW >= 0 && st.PowerEstW >= st.PowerW && st.PowerMaxW < 1e16) {
			t.Fatalf("site after fuzzed rollup: %+v", st)
		}
	})
}
