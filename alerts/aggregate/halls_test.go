package aggregate

import (
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"google.golang.org/protobuf/proto"
)

// A site aggregator fed by per-hall aggregators gives the same site
// figures as one aggregator over everything, including while nodes are
// silent (held, then estimated) and with an oscillating job.
func TestSiteFromHallsEqualsOneAggregator(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	f := newFleet(t, topo, sim.Job{Name: "sync", Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.9, CommFrac: 0.3, Nodes: "hall=h1"},
		sim.Job{Name: "steady", Period: 4 * time.Second, Duty: 0.9, ComputeFrac: 0.8, CommFrac: 0.6, Nodes: "hall=h2"})
	one, err := New(testConfig(), topo)
	if err != nil {
		t.Fatal(err)
	}
	var hallAggs []*Aggregator
	for _, h := range topo.DomainsAt(topology.LevelHall) {
		cfg := testConfig()
		cfg.Scope = h
		ha, err := New(cfg, topo)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ha.Out() {
			if d := topo.Domains()[id]; !isUnder(d, h) {
				t.Fatalf("hall aggregator %s publishes %s", h.Key(), d.Key())
			}
		}
		hallAggs = append(hallAggs, ha)
	}
	sc := testConfig()
	sc.FromHalls = true
	site, err := New(sc, topo)
	if err != nil {
		t.Fatal(err)
	}
	if got := site.Out(); len(got) != 1 || got[0] != topo.Sites()[0].ID {
		t.Fatalf("site aggregator publishes %v", got)
	}
	silent := func(i int) bool { return i%7 == 3 }
	var rollup telemetry.Rollup
	for w := 1; w <= 70; w++ {
		end := testEpoch.Add(time.Duration(w) * time.Second)
		var skip func(int) bool
		if w > 30 {
			skip = silent
		}
		rs := reports(t, topo, f, end, skip)
		feed(t, one, rs)
		want := one.Tick(end)[topo.Sites()[0].ID]
		for _, ha := range hallAggs {
			for _, r := range rs {
				_ = ha.HandleReport(r.subject, r.data) // nodes outside the hall are stored but never summed
			}
			st := ha.Tick(end)
			for _, id := range ha.Out() {
				d := topo.Domains()[id]
				if d.Level != topology.LevelHall {
					continue
				}
				st[id].Fill(d, testWindow, testSlot, uint64(w), &rollup)
				b, err := proto.Marshal(&rollup)
				if err != nil {
					t.Fatal(err)
				}
				if err := site.HandleRollup(b); err != nil {
					t.Fatal(err)
				}
			}
		}
		got := site.Tick(end)[topo.Sites()[0].ID]
		tol := 1e-6 * want.PowerEstW
		if !near(got.PowerW, want.PowerW, tol) || !near(got.PowerEstW, want.PowerEstW, tol) || !near(got.PowerMaxW, want.PowerMaxW, tol) ||
			got.NodesReporting != want.NodesReporting || got.StaleNodes != want.StaleNodes || got.NodesExpected != want.NodesExpected ||
			got.Coverage != want.Coverage || got.GPUTempMaxC != want.GPUTempMaxC || got.ThrottledGPUs != want.ThrottledGPUs || got.GPUs != want.GPUs {
			t.Fatalf("window %d: from halls %+v\nwant %+v", w, got, want)
		}
		for s := range got.Slots {
			if !near(got.Slots[s], want.Slots[s], tol) {
				t.Fatalf("window %d slot %d: %v, want %v", w, s, got.Slots[s], want.Slots[s])
			}
		}
		if got.HasAnalysis != want.HasAnalysis || !near(got.RampWPerS, want.RampWPerS, tol) || !near(got.SwingW, want.SwingW, tol) ||
			got.HasOsc != want.HasOsc || !near(got.OscFreqHz, want.OscFreqHz, 1e-6) || !near(got.OscW, want.OscW, tol) {
			t.Fatalf("window %d analysis: from halls ramp %v swing %v osc %v %v; want %v %v %v %v", w,
				got.RampWPerS, got.SwingW, got.OscFreqHz, got.OscW, want.RampWPerS, want.SwingW, want.OscFreqHz, want.OscW)
		}
		if w == 70 && (!got.HasOsc || got.StaleNodes == 0) {
			t.Fatalf("scenario did not exercise oscillation (%v) and silent nodes (%d)", got.HasOsc, got.StaleNodes)
		}
	}
}
