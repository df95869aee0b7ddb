package aggregate

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"google.golang.org/protobuf/proto"
)

// meterTopo: site dc1 (utility meter) → hall h1 (switchgear) → rows r1, r2
// (no meters) → racks k1, k2 with PDUs a and b → 2 nodes per rack.
const meterTopo = `
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 1000
    meters:
      - {name: util-dc1, protocol: modbus, address: "util:502", modbus: {power: {address: 0, type: u32}}}
    children:
      - name: h1
        capacity_kw: 400
        meters:
          - {name: swgr-h1, protocol: modbus, address: "swgr:502", modbus: {power: {address: 0, type: u32}}}
        children:
          - name: r[1-2]
            capacity_kw: 200
            children:
              - name: k[1-2]
                capacity_kw: 50
                nodes: ["n-{row}-{rack}-[1-2]"]
                meters:
                  - {name: "pdu-{row}-{rack}-a", protocol: modbus, address: "pdu-{row}-{rack}-a:502", modbus: {power: {address: 0, type: u32}}}
                  - {name: "pdu-{row}-{rack}-b", protocol: modbus, address: "pdu-{row}-{rack}-b:502", modbus: {power: {address: 0, type: u32}}}
`

// nodeOpt is one node's window: W per GPU (2 GPUs), node power (0: none
// sent) and its source, CPU power (0: none sent).
type nodeOpt struct {
	gpuW, nodeW, cpuW uint32
	src               telemetry.NodePowerSource
}

func nodeRep(t testing.TB, n *topology.Node, end time.Time, o nodeOpt) encoded {
	t.Helper()
	r := &telemetry.NodeReport{Site: n.Location.Site, Hall: n.Location.Hall, Row: n.Location.Row, Rack: n.Location.Rack, Node: n.Name,
		WindowEndUnixNs: end.UnixNano(), WindowMs: uint32(testWindow.Milliseconds()), SlotMs: uint32(testSlot.Milliseconds())}
	for range 10 {
		r.SlotPowerW = append(r.SlotPowerW, 2*o.gpuW)
	}
	for g := range 2 {
		p := o.gpuW * 1000
		r.Gpus = append(r.Gpus, &telemetry.Gpu{Index: uint32(g), PowerMw: &p})
	}
	if o.nodeW > 0 {
		mw := o.nodeW * 1000
		r.NodePowerMw, r.NodePowerSource = &mw, o.src
	}
	if o.cpuW > 0 {
		mw := o.cpuW * 1000
		r.CpuPowerMw = &mw
	}
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := telemetry.PowerSubject(n.Location)
	return encoded{s, b}
}

// meterRep is meter name's report for the window ending at end (w < 0:
// stale), over windowMs.
func meterRep(t testing.TB, topo *topology.Topology, name string, end time.Time, w float64, windowMs uint32) encoded {
	t.Helper()
	m, ok := topo.Meter(name)
	if !ok {
		t.Fatalf("no meter %s", name)
	}
	r := &telemetry.MeterReport{Meter: name, Level: m.Domain.Level, Path: m.Domain.Path, WindowEndUnixNs: end.UnixNano(), WindowMs: windowMs}
	if w < 0 {
		r.Stale, r.Error = true, "timeout"
	} else {
		r.PowerW = &w
	}
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	s, err := telemetry.MeterSubject(m.Domain.Path, name)
	if err != nil {
		t.Fatal(err)
	}
	return encoded{s, b}
}

type ftest struct {
	t    *testing.T
	topo *topology.Topology
	a    *Aggregator
}

func newFTest(t *testing.T, y string, mod func(*Config)) *ftest {
	t.Helper()
	topo := parseTopo(t, y)
	cfg := testConfig()
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg, topo)
	if err != nil {
		t.Fatal(err)
	}
	return &ftest{t, topo, a}
}

func end(w int) time.Time { return testEpoch.Add(time.Duration(w) * testWindow) }

func (f *ftest) node(w int, name string, o nodeOpt) {
	f.t.Helper()
	n, ok := f.topo.Node(name)
	if !ok {
		f.t.Fatalf("no node %s", name)
	}
	r := nodeRep(f.t, n, end(w), o)
	if err := f.a.HandleReport(r.subject, r.data); err != nil {
		f.t.Fatalf("%s: %v", name, err)
	}
}

// nodes sends every node o.
func (f *ftest) nodes(w int, o nodeOpt, skip func(*topology.Node) bool) {
	for _, n := range f.topo.Nodes() {
		if skip == nil || !skip(n) {
			f.node(w, n.Name, o)
		}
	}
}

func (f *ftest) meter(w int, name string, watts float64) error {
	r := meterRep(f.t, f.topo, name, end(w), watts, uint32(testWindow.Milliseconds()))
	return f.a.HandleMeter(r.subject, r.data)
}

func (f *ftest) mustMeter(w int, name string, watts float64) {
	f.t.Helper()
	if err := f.meter(w, name, watts); err != nil {
		f.t.Fatalf("meter %s: %v", name, err)
	}
}

// rackMeters sends both PDUs of every rack watts each (except skip).
func (f *ftest) rackMeters(w int, watts float64, skip string) {
	for _, m := range f.topo.Meters() {
		if m.Domain.Level == topology.LevelRack && m.Name != skip {
			f.mustMeter(w, m.Name, watts)
		}
	}
}

func (f *ftest) tick(w int) []DomainState { return f.a.Tick(end(w)) }

func (f *ftest) id(path ...string) int {
	d, ok := f.topo.Domain(path...)
	if !ok {
		f.t.Fatalf("no domain %v", path)
	}
	return d.ID
}

func eq(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// Node power sums each source exactly: measured (Redfish, hwmon), the
// collector's model, and the aggregator's node_model for a node that sent
// none; held and missing nodes like GPU power.
func TestNodePowerSourcesExactSums(t *testing.T) {
	opts := map[string]nodeOpt{
		"n-r1-k1-1": {gpuW: 500, nodeW: 1800, cpuW: 300, src: telemetry.NodePowerSource_NODE_POWER_REDFISH},
		"n-r1-k1-2": {gpuW: 400, nodeW: 1500, src: telemetry.NodePowerSource_NODE_POWER_HWMON},
		"n-r1-k2-1": {gpuW: 600, nodeW: 2600, src: telemetry.NodePowerSource_NODE_POWER_MODEL},
		"n-r1-k2-2": {gpuW: 700}, // none: 1400 + 1000 + 2 × 100 = 2600
	}
	f := newFTest(t, meterTopo, func(c *Config) { c.NodeModel = NodeModel{HostW: 1000, PerGPUW: 100} })
	var fresh, held, gone []DomainState
	for w := 1; w <= 8; w++ {
		if w <= 2 {
			for n, o := range opts {
				f.node(w, n, o)
			}
		}
		st := f.tick(w)
		switch w {
		case 2:
			fresh = append([]DomainState(nil), st...)
		case 3:
			held = append([]DomainState(nil), st...)
		case 6:
			gone = append([]DomainState(nil), st...)
		}
	}
	id := f.id
	k1, k2, r1 := fresh[id("dc1", "h1", "r1", "k1")], fresh[id("dc1", "h1", "r1", "k2")], fresh[id("dc1", "h1", "r1")]
	eq(t, "k1 NodePowerW", k1.NodePowerW, 3300)
	eq(t, "k1 NodePowerModeledW", k1.NodePowerModeledW, 0)
	eq(t, "k2 NodePowerW", k2.NodePowerW, 5200)
	eq(t, "k2 NodePowerModeledW", k2.NodePowerModeledW, 5200)
	eq(t, "r1 NodePowerW", r1.NodePowerW, 8500)
	eq(t, "r1 NodePowerEstW", r1.NodePowerEstW, 8500)
	eq(t, "r1 PowerW (GPU)", r1.PowerW, 2*(500+400+600+700))
	eq(t, "r1 CPUPowerW", r1.CPUPowerW, 300)
	eq(t, "r1 NodeContDeltaW", r1.NodeContDeltaW, 0)
	if r1.NodesPowerMeasured != 2 || !r1.HasCPUPower || k2.HasCPUPower {
		t.Errorf("measured %d, cpu %v / k2 %v", r1.NodesPowerMeasured, r1.HasCPUPower, k2.HasCPUPower)
	}
	site := fresh[id("dc1")]
	eq(t, "site NodePowerW", site.NodePowerW, 8500)
	// r2's nodes never reported: nothing known of them, nothing estimated.
	eq(t, "site NodeMissingEstW", site.NodeMissingEstW, 0)
	if site.HasMetered || site.FacilityW != site.NodePowerEstW || site.Meters != 10 || site.MetersStale != 10 || !site.FacilityDegraded {
		t.Errorf("site without meter readings: metered %v facility %v meters %d/%d degraded %v", site.HasMetered, site.FacilityW, site.MetersStale, site.Meters, site.FacilityDegraded)
	}
	eq(t, "site FacilityHeadroomW", site.FacilityHeadroomW, 1_000_000-8500)
	h := held[id("dc1", "h1", "r1")]
	eq(t, "held NodePowerW", h.NodePowerW, 8500)
	eq(t, "held NodePowerModeledW", h.NodePowerModeledW, 5200)
	if h.NodesPowerMeasured != 2 || h.NodesHeld != 4 {
		t.Errorf("held: measured %d held %d", h.NodesPowerMeasured, h.NodesHeld)
	}
	g := gone[id("dc1", "h1", "r1")]
	eq(t, "gone NodePowerW", g.NodePowerW, 0)
	eq(t, "gone NodeMissingEstW", g.NodeMissingEstW, 8500)
	eq(t, "gone NodePowerEstW", g.NodePowerEstW, 8500)
	eq(t, "gone FacilityW", g.FacilityW, 8500)
}

// NodeModel's zero value is the default node type (DGX H100).
func TestNodeModelDefault(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	f.node(1, "n-r1-k1-1", nodeOpt{gpuW: 500})
	st := f.tick(1)
	eq(t, "NodePowerW", st[f.id("dc1", "h1", "r1", "k1")].NodePowerW, 1000+1500+2*387.5)
}

// Node continuity: a node's change of node power counts when it reported
// both windows with the same kind of source.
func TestNodeContDelta(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	redfish := telemetry.NodePowerSource_NODE_POWER_REDFISH
	f.node(1, "n-r1-k1-1", nodeOpt{gpuW: 500, nodeW: 2000, src: redfish})
	f.node(1, "n-r1-k1-2", nodeOpt{gpuW: 500, nodeW: 2000, src: redfish})
	f.tick(1)
	f.node(2, "n-r1-k1-1", nodeOpt{gpuW: 600, nodeW: 2300, src: redfish})
	f.node(2, "n-r1-k1-2", nodeOpt{gpuW: 600}) // switched to node_model: no change counted
	f.node(2, "n-r1-k2-1", nodeOpt{gpuW: 600, nodeW: 9000, src: redfish})
	d := f.tick(2)[f.id("dc1")]
	eq(t, "NodeContDeltaW", d.NodeContDeltaW, 300)
	eq(t, "FacilityContDeltaW", d.FacilityContDeltaW, 300)
}

// A meter's fresh reading counts for its window, is held for stale_after
// more windows, then the meter is stale: never 0 W.
func TestMeterFreshHeldStale(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	k1 := f.id("dc1", "h1", "r1", "k1")
	f.mustMeter(1, "pdu-r1-k1-a", 3000)
	f.mustMeter(1, "pdu-r1-k1-b", 2500)
	for w := 1; w <= 5; w++ {
		d := f.tick(w)[k1]
		if w <= 4 {
			if !d.HasMetered || d.MeteredW != 5500 || d.MetersStale != 0 || d.Meters != 2 || d.FacilityW != 5500 {
				t.Errorf("w%d: metered %v %v stale %d/%d facility %v", w, d.HasMetered, d.MeteredW, d.MetersStale, d.Meters, d.FacilityW)
			}
			continue
		}
		if d.HasMetered || d.MeteredW != 0 || d.MetersStale != 2 || !d.FacilityDegraded || d.FacilityW != d.NodePowerEstW {
			t.Errorf("w%d: stale meters: metered %v %v stale %d degraded %v", w, d.HasMetered, d.MeteredW, d.MetersStale, d.FacilityDegraded)
		}
	}
	// A slower meter (5 s) is held until its next reading.
	f = newFTest(t, meterTopo, nil)
	for _, n := range []string{"pdu-r1-k1-a", "pdu-r1-k1-b"} {
		r := meterRep(t, f.topo, n, end(1), 1000, 5000)
		if err := f.a.HandleMeter(r.subject, r.data); err != nil {
			t.Fatal(err)
		}
	}
	for w := 1; w <= 9; w++ {
		d := f.tick(w)[k1]
		if want := w <= 8; d.HasMetered != want {
			t.Errorf("5 s meter, w%d: metered %v, want %v", w, d.HasMetered, want)
		}
	}
	if s := f.a.MeterStats(); s.Accepted != 2 {
		t.Errorf("stats %+v", s)
	}
}

// A fresh report wins over a stale one for the same meter and window,
// whatever their order; a stale one never ends a hold early and never
// reads as 0 W.
func TestMeterFreshBeatsStale(t *testing.T) {
	for _, staleFirst := range []bool{true, false} {
		f := newFTest(t, meterTopo, nil)
		k1 := f.id("dc1", "h1", "r1", "k1")
		f.mustMeter(1, "pdu-r1-k1-b", 2500)
		if staleFirst {
			f.mustMeter(1, "pdu-r1-k1-a", -1)
			f.mustMeter(1, "pdu-r1-k1-a", 3000)
		} else {
			f.mustMeter(1, "pdu-r1-k1-a", 3000)
			f.mustMeter(1, "pdu-r1-k1-a", -1)
		}
		d := f.tick(1)[k1]
		if !d.HasMetered || d.MeteredW != 5500 {
			t.Errorf("stale first %v: metered %v %v", staleFirst, d.HasMetered, d.MeteredW)
		}
		// Stale only: held at the last fresh value.
		f.mustMeter(2, "pdu-r1-k1-a", -1)
		f.mustMeter(2, "pdu-r1-k1-b", -1)
		if d := f.tick(2)[k1]; !d.HasMetered || d.MeteredW != 5500 {
			t.Errorf("stale first %v, held: %v %v", staleFirst, d.HasMetered, d.MeteredW)
		}
		if s := f.a.MeterStats(); s.Accepted != 2 || s.Stale != 3 {
			t.Errorf("stats %+v", s)
		}
	}
	// A meter never read fresh is stale from the start.
	f := newFTest(t, meterTopo, nil)
	f.mustMeter(1, "pdu-r1-k1-a", -1)
	f.mustMeter(1, "pdu-r1-k1-b", -1)
	if d := f.tick(1)[f.id("dc1", "h1", "r1", "k1")]; d.HasMetered || d.MetersStale != 2 {
		t.Errorf("never fresh: %v stale %d", d.HasMetered, d.MetersStale)
	}
}

// Without its own meters (or with a stale one) a domain is metered by its
// children when every child is metered, recursively.
func TestMeteredFromChildren(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	hall, site, r1 := f.id("dc1", "h1"), f.id("dc1"), f.id("dc1", "h1", "r1")
	f.rackMeters(1, 1000, "")
	st := f.tick(1)
	// swgr-h1 and util-dc1 never read: the hall is the sum of its rows,
	// each the sum of its racks' PDUs.
	if d := st[r1]; !d.HasMetered || d.MeteredW != 4000 || d.FacilityDegraded {
		t.Errorf("row: %v %v degraded %v", d.HasMetered, d.MeteredW, d.FacilityDegraded)
	}
	for _, id := range []int{hall, site} {
		d := st[id]
		if !d.HasMetered || d.MeteredW != 8000 || d.MetersStale != map[int]int{hall: 1, site: 2}[id] || d.FacilityDegraded {
			t.Errorf("%d: %v %v stale %d degraded %v", id, d.HasMetered, d.MeteredW, d.MetersStale, d.FacilityDegraded)
		}
	}
	// Own meters first.
	f.rackMeters(2, 1000, "")
	f.mustMeter(2, "swgr-h1", 9000)
	f.mustMeter(2, "util-dc1", 9500)
	st = f.tick(2)
	eq(t, "hall MeteredW", st[hall].MeteredW, 9000)
	eq(t, "site MeteredW", st[site].MeteredW, 9500)
	eq(t, "site FacilityW", st[site].FacilityW, 9500)
	eq(t, "site UnaccountedW", st[site].UnaccountedW, 9500)
	if st[site].MetersStale != 0 || st[site].Meters != 10 {
		t.Errorf("site meters %d/%d", st[site].MetersStale, st[site].Meters)
	}
}

// One of a rack's two PDUs stale: the rack is not metered (never half its
// load), falls back to node power and is degraded; so is its row, while
// the hall's switchgear still covers the hall.
func TestPartialMeterFeed(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	k1, r1, hall := f.id("dc1", "h1", "r1", "k1"), f.id("dc1", "h1", "r1"), f.id("dc1", "h1")
	var st []DomainState
	for w := 1; w <= 5; w++ {
		f.nodes(w, nodeOpt{gpuW: 500, nodeW: 2000, src: telemetry.NodePowerSource_NODE_POWER_REDFISH}, nil)
		skip := ""
		if w > 1 {
			skip = "pdu-r1-k1-b"
		}
		f.rackMeters(w, 2200, skip)
		f.mustMeter(w, "swgr-h1", 40000)
		st = f.tick(w)
	}
	d := st[k1]
	if d.HasMetered || d.FacilityW != 4000 || !d.FacilityDegraded || d.MetersStale != 1 {
		t.Errorf("rack: metered %v facility %v degraded %v stale %d", d.HasMetered, d.FacilityW, d.FacilityDegraded, d.MetersStale)
	}
	if d := st[r1]; d.HasMetered || d.FacilityW != 8000 || !d.FacilityDegraded {
		t.Errorf("row: metered %v facility %v degraded %v", d.HasMetered, d.FacilityW, d.FacilityDegraded)
	}
	if d := st[f.id("dc1", "h1", "r2")]; !d.HasMetered || d.MeteredW != 8800 || d.UnaccountedW != 800 {
		t.Errorf("r2: %v %v unaccounted %v", d.HasMetered, d.MeteredW, d.UnaccountedW)
	}
	if d := st[hall]; !d.HasMetered || d.FacilityW != 40000 || d.FacilityDegraded || d.UnaccountedW != 40000-16000 || d.MetersStale != 1 {
		t.Errorf("hall: %v %v degraded %v unaccounted %v stale %d", d.HasMetered, d.FacilityW, d.FacilityDegraded, d.UnaccountedW, d.MetersStale)
	}
}

// A rack's collectors stop while its meters keep reading: unaccounted
// grows by the rack's node power once the nodes are no longer held — the
// divergence signal.
func TestUnaccountedGrowsWhenCollectorsStop(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	k1, r1 := f.id("dc1", "h1", "r1", "k1"), f.id("dc1", "h1", "r1")
	silent := func(n *topology.Node) bool { return n.Location.Row == "r1" && n.Location.Rack == "k1" }
	for w := 1; w <= 10; w++ {
		var skip func(*topology.Node) bool
		if w > 3 {
			skip = silent
		}
		f.nodes(w, nodeOpt{gpuW: 500, nodeW: 2000, src: telemetry.NodePowerSource_NODE_POWER_HWMON}, skip)
		f.rackMeters(w, 2100, "")
		st := f.tick(w)
		want := 200.0 // 2 × 2100 − 2 × 2000
		if w > 3+3 {
			want = 4200
		}
		eq(t, fmt.Sprintf("rack UnaccountedW w%d", w), st[k1].UnaccountedW, want)
		eq(t, fmt.Sprintf("row UnaccountedW w%d", w), st[r1].UnaccountedW, want+200)
		if st[k1].FacilityW != 4200 || st[k1].FacilityDegraded {
			t.Errorf("w%d: facility %v degraded %v", w, st[k1].FacilityW, st[k1].FacilityDegraded)
		}
	}
}

// Without meters and with constant host power, the facility analysis is
// the GPU analysis: same ramp, swing and oscillation; FacilityMaxW is the
// GPU max shifted by the host power.
func TestFacilityAnalysisFollowsGPU(t *testing.T) {
	f := newFTest(t, pduTopo, func(c *Config) { c.FacilityOscLevels = []string{topology.LevelSite} })
	var d DomainState
	for w := 1; w <= 70; w++ {
		gpu := uint32(300 + 5*w)
		if w%2 == 0 {
			gpu += 100 // 0.5 Hz square wave
		}
		f.nodes(w, nodeOpt{gpuW: gpu}, nil) // node_model: GPU + constant
		d = f.tick(w)[f.topo.Sites()[0].ID]
	}
	if !d.HasOsc || !d.Facility.HasOsc || d.HasMetered || d.Meters != 0 || d.FacilityDegraded {
		t.Fatalf("osc %v/%v metered %v meters %d degraded %v", d.HasOsc, d.Facility.HasOsc, d.HasMetered, d.Meters, d.FacilityDegraded)
	}
	if !near(d.Facility.RampWPerS, d.RampWPerS, 1e-6) || !near(d.Facility.SwingW, d.SwingW, 1e-6) ||
		!near(d.Facility.OscW, d.OscW, 1e-6) || d.Facility.OscFreqHz != d.OscFreqHz || d.RampWPerS == 0 {
		t.Errorf("facility ramp %v swing %v osc %v@%v, GPU %v %v %v@%v", d.Facility.RampWPerS, d.Facility.SwingW, d.Facility.OscW, d.Facility.OscFreqHz,
			d.RampWPerS, d.SwingW, d.OscW, d.OscFreqHz)
	}
	host := 48 * (1500 + 2*387.5)
	eq(t, "FacilityW", d.FacilityW, d.PowerW+host)
	eq(t, "FacilityMaxW", d.FacilityMaxW, d.PowerMaxW+host)
}

// A scoped aggregator counts only the meters in its scope.
func TestMetersInScope(t *testing.T) {
	topo := parseTopo(t, meterTopo)
	r1, _ := topo.Domain("dc1", "h1", "r1")
	cfg := testConfig()
	cfg.Scope = r1
	a, err := New(cfg, topo)
	if err != nil {
		t.Fatal(err)
	}
	f := &ftest{t, topo, a}
	if !a.HasMeters() {
		t.Fatal("no meters in scope")
	}
	if err := f.meter(1, "swgr-h1", 1); !errors.Is(err, ErrUnknownMeter) {
		t.Errorf("out of scope: %v", err)
	}
	if err := f.meter(1, "pdu-r2-k1-a", 1); !errors.Is(err, ErrUnknownMeter) {
		t.Errorf("other row: %v", err)
	}
	f.mustMeter(1, "pdu-r1-k1-a", 1)
	d := f.tick(1)[r1.ID]
	if d.Meters != 4 || d.MetersStale != 3 {
		t.Errorf("row meters %d/%d", d.MetersStale, d.Meters)
	}
	noMeters, _ := New(testConfig(), parseTopo(t, pduTopo))
	if noMeters.HasMeters() {
		t.Error("pduTopo has meters")
	}
}

// Reports that do not match their meter are refused and counted.
func TestRejectsMeterReports(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	good := meterRep(t, f.topo, "pdu-r1-k1-a", end(2), 100, 1000)
	mod := func(fn func(*telemetry.MeterReport)) []byte {
		var m telemetry.MeterReport
		if err := proto.Unmarshal(good.data, &m); err != nil {
			t.Fatal(err)
		}
		fn(&m)
		b, _ := proto.Marshal(&m)
		return b
	}
	for _, c := range []struct {
		name    string
		subject string
		data    []byte
		want    error
	}{
		{"garbage", good.subject, []byte{0xff, 0xff}, nil},
		{"unknown", good.subject, mod(func(m *telemetry.MeterReport) { m.Meter = "nope" }), ErrUnknownMeter},
		{"subject", strings.Replace(good.subject, "k1", "k2", 1), good.data, ErrMismatch},
		{"path", good.subject, mod(func(m *telemetry.MeterReport) { m.Path[3] = "k2" }), ErrMismatch},
		{"level", good.subject, mod(func(m *telemetry.MeterReport) { m.Level = "row" }), ErrMismatch},
		{"window", good.subject, mod(func(m *telemetry.MeterReport) { m.WindowMs = 1500 }), ErrShape},
		{"zero window", good.subject, mod(func(m *telemetry.MeterReport) { m.WindowMs = 0 }), ErrShape},
		{"unaligned", good.subject, mod(func(m *telemetry.MeterReport) { m.WindowEndUnixNs += 1e8 }), ErrShape},
		{"no power", good.subject, mod(func(m *telemetry.MeterReport) { m.PowerW = nil }), nil},
		{"negative", good.subject, mod(func(m *telemetry.MeterReport) { v := -1.0; m.PowerW = &v }), nil},
		{"nan", good.subject, mod(func(m *telemetry.MeterReport) { v := math.NaN(); m.PowerW = &v }), nil},
	} {
		err := f.a.HandleMeter(c.subject, c.data)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	f.tick(2)
	if err := f.meter(2, "pdu-r1-k1-a", 1); !errors.Is(err, ErrLate) {
		t.Errorf("late: %v", err)
	}
	if err := f.meter(9, "pdu-r1-k1-a", 1); !errors.Is(err, ErrFuture) {
		t.Errorf("future: %v", err)
	}
	want := MeterStats{Decode: 4, Unknown: 1, Mismatch: 3, Shape: 3, Late: 1, Future: 1}
	if s := f.a.MeterStats(); s != want {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	if s := f.a.Stats(); s.Late != 0 || s.Future != 0 {
		t.Errorf("node stats counted meter reports: %+v", s)
	}
}

// The rollup carries fields 40-57; the optional ones only when valid.
func TestFillFacilityFields(t *testing.T) {
	f := newFTest(t, meterTopo, nil)
	f.nodes(1, nodeOpt{gpuW: 500, nodeW: 2000, cpuW: 200, src: telemetry.NodePowerSource_NODE_POWER_REDFISH}, nil)
	f.rackMeters(1, 2100, "pdu-r2-k2-b")
	st := f.tick(1)
	var r telemetry.Rollup
	for _, path := range [][]string{{"dc1", "h1", "r1"}, {"dc1", "h1", "r2"}} {
		dom, _ := f.topo.Domain(path...)
		st[dom.ID].Fill(dom, testWindow, testSlot, 1, &r)
		metered := path[2] == "r1"
		if r.GetNodePowerW() != 8000 || r.GetNodePowerEstW() != 8000 || r.GetNodesPowerMeasured() != 4 || r.GetNodePowerModeledW() != 0 ||
			r.GetMeters() != 4 || r.GetCpuPowerW() != 800 || r.FacilityContinuityDeltaW == nil || r.FacilityRampWPerS != nil {
			t.Errorf("%v: %v", path, &r)
		}
		if metered {
			if r.GetFacilitySource() != telemetry.FacilitySource_FACILITY_SOURCE_METER || r.GetMeteredW() != 8400 || r.GetUnaccountedW() != 400 ||
				r.GetFacilityPowerW() != 8400 || r.GetFacilityPowerMaxW() != 8400 || r.GetFacilityDegraded() || r.GetMetersStale() != 0 {
				t.Errorf("metered %v: %v", path, &r)
			}
		} else if r.GetFacilitySource() != telemetry.FacilitySource_FACILITY_SOURCE_NODE || r.MeteredW != nil || r.UnaccountedW != nil ||
			r.GetFacilityPowerW() != 8000 || !r.GetFacilityDegraded() || r.GetMetersStale() != 1 {
			t.Errorf("node %v: %v", path, &r)
		}
	}
}

// A site aggregator fed by hall rollups follows the same rules: the site's
// own meters first, else its halls' metered figures; an older hall
// aggregator's rollup is not metered and its node power is its GPU estimate.
func TestSiteFromHallsFacility(t *testing.T) {
	topo := parseTopo(t, meterTopo)
	h1, _ := topo.Domain("dc1", "h1")
	hc := testConfig()
	hc.Scope = h1
	ha, err := New(hc, topo)
	if err != nil {
		t.Fatal(err)
	}
	sc := testConfig()
	sc.FromHalls = true
	site, err := New(sc, topo)
	if err != nil {
		t.Fatal(err)
	}
	if !site.HasMeters() {
		t.Fatal("site aggregator: util-dc1 not in scope")
	}
	hf, sf := &ftest{t, topo, ha}, &ftest{t, topo, site}
	if err := hf.meter(1, "util-dc1", 1); !errors.Is(err, ErrUnknownMeter) {
		t.Errorf("hall aggregator took the site's meter: %v", err)
	}
	if err := sf.meter(1, "swgr-h1", 1); !errors.Is(err, ErrUnknownMeter) {
		t.Errorf("site aggregator took the hall's meter: %v", err)
	}
	var r telemetry.Rollup
	for w := 1; w <= 4; w++ {
		hf.nodes(w, nodeOpt{gpuW: 500, nodeW: 2000 + uint32(w), cpuW: 100, src: telemetry.NodePowerSource_NODE_POWER_REDFISH}, nil)
		hf.mustMeter(w, "swgr-h1", 20000)
		if w >= 3 {
			sf.mustMeter(w, "util-dc1", 21000)
		}
		hs := ha.Tick(end(w))
		hs[h1.ID].Fill(h1, testWindow, testSlot, uint64(w), &r)
		b, _ := proto.Marshal(&r)
		if err := site.HandleRollup(b); err != nil {
			t.Fatal(err)
		}
		d := site.Tick(end(w))[topo.Sites()[0].ID]
		hd := hs[h1.ID]
		eq(t, "site NodePowerW", d.NodePowerW, hd.NodePowerW)
		eq(t, "site NodePowerW", d.NodePowerW, 8*float64(2000+w))
		eq(t, "site CPUPowerW", d.CPUPowerW, 800)
		if d.NodesPowerMeasured != 8 || d.Meters != 10 {
			t.Errorf("w%d: measured %d meters %d", w, d.NodesPowerMeasured, d.Meters)
		}
		wantW := 20000.0
		if w >= 3 {
			wantW = 21000
		}
		if !d.HasMetered || d.MeteredW != wantW || d.UnaccountedW != wantW-d.NodePowerW {
			t.Errorf("w%d: metered %v %v unaccounted %v", w, d.HasMetered, d.MeteredW, d.UnaccountedW)
		}
		if w == 2 {
			eq(t, "site FacilityContDeltaW (metered, unchanged)", d.FacilityContDeltaW, 0)
		}
		if w == 3 { // switched from the halls' to its own meter: node change
			eq(t, "site FacilityContDeltaW (switch)", d.FacilityContDeltaW, 8)
		}
	}
	// An older hall aggregator: no facility fields (util-dc1 held to w7, then stale).
	var d DomainState
	for w := 5; w <= 8; w++ {
		old := &telemetry.Rollup{Level: topology.LevelHall, Path: h1.Path, WindowEndUnixNs: end(w).UnixNano(), WindowMs: 1000, SlotMs: 100,
			PowerW: 7000, PowerEstW: 7500, SlotPowerW: make([]float64, 10), NodesReporting: 7, NodesExpected: 8, StaleNodes: 1}
		b, _ := proto.Marshal(old)
		if err := site.HandleRollup(b); err != nil {
			t.Fatal(err)
		}
		d = site.Tick(end(w))[topo.Sites()[0].ID]
	}
	eq(t, "old NodePowerW", d.NodePowerW, 7000)
	eq(t, "old NodePowerEstW", d.NodePowerEstW, 7500)
	if d.Meters != 1 || d.MetersStale != 1 || d.HasMetered || !d.FacilityDegraded || d.FacilityW != 7500 {
		t.Errorf("old hall, site meter stale: meters %d/%d metered %v degraded %v facility %v", d.MetersStale, d.Meters, d.HasMetered, d.FacilityDegraded, d.FacilityW)
	}
}

// FuzzHandleMeter feeds arbitrary MeterReport bodies: never a panic, never
// a negative, NaN or infinite metered figure.
func FuzzHandleMeter(f *testing.F) {
	topo := parseTopo(f, meterTopo)
	good := meterRep(f, topo, "pdu-r1-k1-a", end(1), 1234.5, 1000)
	stale := meterRep(f, topo, "pdu-r1-k1-a", end(1), -1, 1000)
	f.Add(good.data)
	f.Add(stale.data)
	f.Add(meterRep(f, topo, "pdu-r1-k1-a", end(1), 10, 3000).data)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := New(testConfig(), topo)
		if err != nil {
			t.Fatal(err)
		}
		err = a.HandleMeter(good.subject, data)
		var m telemetry.MeterReport
		if perr := proto.Unmarshal(data, &m); perr != nil && err == nil {
			t.Fatalf("accepted what protobuf refuses: %v", perr)
		}
		if err != nil {
			return
		}
		k := m.GetWindowEndUnixNs() / int64(testWindow)
		st := a.Tick(time.Unix(0, k*int64(testWindow)))
		for _, id := range a.Out() {
			d := st[id]
			if !(d.MeteredW >= 0) || math.IsInf(d.MeteredW, 0) || d.MetersStale > d.Meters || (d.HasMetered && m.GetStale()) {
				t.Fatalf("%d: metered %v %v stale %d/%d", id, d.HasMetered, d.MeteredW, d.MetersStale, d.Meters)
			}
		}
	})
}

// A row whose racks are partly metered by design (k1 has PDUs, k2 none,
// no row meter) has the node figure as its facility power and is not
// degraded for it; a rack whose own PDUs go stale is.
const partTopo = `
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h1
        capacity_kw: 400
        children:
          - name: r1
            capacity_kw: 200
            children:
              - name: k1
                capacity_kw: 50
                nodes: ["n-{row}-{rack}-[1-2]"]
                meters:
                  - {name: "pdu-{row}-{rack}-a", protocol: modbus, address: "pdu-{row}-{rack}-a:502", modbus: {power: {address: 0, type: u32}}}
              - name: k2
                capacity_kw: 50
                nodes: ["n-{row}-{rack}-[1-2]"]
`

func TestPartlyMeteredByDesignIsNotDegraded(t *testing.T) {
	f := newFTest(t, partTopo, nil)
	k1, k2, r1 := f.id("dc1", "h1", "r1", "k1"), f.id("dc1", "h1", "r1", "k2"), f.id("dc1", "h1", "r1")
	var st []DomainState
	for w := 1; w <= 3; w++ {
		f.nodes(w, nodeOpt{gpuW: 500, nodeW: 2000, src: telemetry.NodePowerSource_NODE_POWER_REDFISH}, nil)
		f.mustMeter(w, "pdu-r1-k1-a", 4300)
		st = f.tick(w)
	}
	if d := st[k1]; !d.HasMetered || d.FacilityW != 4300 || d.FacilityDegraded {
		t.Errorf("k1: metered %v facility %v degraded %v", d.HasMetered, d.FacilityW, d.FacilityDegraded)
	}
	for _, id := range []int{k2, r1} {
		if d := st[id]; d.HasMetered || d.FacilityDegraded {
			t.Errorf("%s: metered %v degraded %v, want the node figure, not degraded", f.a.doms[id].Key(), d.HasMetered, d.FacilityDegraded)
		}
	}
	eq(t, "row facility = node sum", st[r1].FacilityW, 8000)
	for w := 4; w <= 8; w++ { // k1's PDU goes silent: after the hold, k1 is degraded
		f.nodes(w, nodeOpt{gpuW: 500, nodeW: 2000, src: telemetry.NodePowerSource_NODE_POWER_REDFISH}, nil)
		st = f.tick(w)
	}
	if d := st[k1]; d.HasMetered || !d.FacilityDegraded || d.FacilityW != 4000 {
		t.Errorf("k1 stale: metered %v degraded %v facility %v", d.HasMetered, d.FacilityDegraded, d.FacilityW)
	}
	if d := st[r1]; d.FacilityDegraded {
		t.Errorf("row degraded by a rack the row is not metered through")
	}
}

// The facility spectrum is computed only at FacilityOscLevels (the levels
// facility oscillation rules look at); ramp and swing everywhere.
func TestFacilitySpectrumOnlyWhereAsked(t *testing.T) {
	f := newFTest(t, pduTopo, nil)
	var st []DomainState
	for w := 1; w <= 70; w++ {
		f.nodes(w, nodeOpt{gpuW: uint32(300 + 100*(w%2))}, nil)
		st = f.tick(w)
	}
	d := st[f.topo.Sites()[0].ID]
	if !d.HasOsc || d.Facility.HasOsc || !d.Facility.HasAnalysis || d.Facility.SwingW == 0 {
		t.Errorf("GPU osc %v, facility osc %v (want none), facility analysis %v swing %v", d.HasOsc, d.Facility.HasOsc, d.Facility.HasAnalysis, d.Facility.SwingW)
	}
}
