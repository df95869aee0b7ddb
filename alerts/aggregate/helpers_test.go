package aggregate

import (
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/internal/topology/topotest"
	"google.golang.org/protobuf/proto"
)

// pduTopo has an extra level (pdu) and two halls: 2 halls × 2 rows × 2 pdus
// × 2 racks × 3 nodes = 48 nodes.
const pduTopo = `
levels: [site, hall, row, pdu, rack]
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h[1-2]
        capacity_kw: 400
        children:
          - name: r[1-2]
            capacity_kw: 200
            children:
              - name: p[1-2]
                capacity_kw: 100
                children:
                  - name: k[1-2]
                    capacity_kw: 50
                    nodes: ["n-{hall}-{row}-{pdu}-{rack}-[1-3]"]
`

var (
	testWindow = time.Second
	testSlot   = 100 * time.Millisecond
	testEpoch  = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
)

func parseTopo(t testing.TB, y string) *topology.Topology {
	t.Helper()
	topo, err := topology.Parse([]byte(y), "test")
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

// bigTopo is a campus of halls × rows × racks × 18 nodes, 200 kW racks.
func bigTopo(t testing.TB, halls, rows, racks int) *topology.Topology {
	return topotest.Campus(t, halls, rows, racks, 200)
}

func testConfig() Config {
	return Config{Window: testWindow, Slot: testSlot, StaleAfter: 3, Grace: 250 * time.Millisecond, AnalysisWindow: 60 * time.Second}
}

func locations(topo *topology.Topology) []telemetry.Location {
	var out []telemetry.Location
	for _, n := range topo.Nodes() {
		out = append(out, n.Location)
	}
	return out
}

func newFleet(t testing.TB, topo *topology.Topology, jobs ...sim.Job) *sim.Fleet {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Epoch = testEpoch
	cfg.Seed = 7
	if len(jobs) > 0 {
		cfg.Jobs = jobs
	}
	f, err := sim.NewFleet(cfg, locations(topo))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// encoded is one report ready to hand to HandleReport.
type encoded struct {
	subject string
	data    []byte
}

// reports simulates the window ending at end for the nodes for which
// skip returns false.
func reports(t testing.TB, topo *topology.Topology, f *sim.Fleet, end time.Time, skip func(i int) bool) []encoded {
	t.Helper()
	var out []encoded
	var rep telemetry.NodeReport
	for i, n := range topo.Nodes() {
		if skip != nil && skip(i) {
			continue
		}
		f.Report(&rep, i, end, testWindow, testSlot)
		b, err := proto.Marshal(&rep)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := telemetry.PowerSubject(n.Location)
		out = append(out, encoded{s, b})
	}
	return out
}

func feed(t testing.TB, a *Aggregator, rs []encoded) {
	t.Helper()
	for _, r := range rs {
		if err := a.HandleReport(r.subject, r.data); err != nil {
			t.Fatalf("%s: %v", r.subject, err)
		}
	}
}

// nodeSums is the sum of each report's GPU mean power and slot vector, per
// domain key, computed straight from the decoded protobuf (the reference).
func nodeSums(t testing.TB, topo *topology.Topology, rs []encoded) (map[string]float64, map[string][]float64) {
	t.Helper()
	pw, sl := map[string]float64{}, map[string][]float64{}
	for _, r := range rs {
		var rep telemetry.NodeReport
		if err := proto.Unmarshal(r.data, &rep); err != nil {
			t.Fatal(err)
		}
		n, _ := topo.Node(rep.GetNode())
		p := 0.0
		for _, g := range rep.GetGpus() {
			if g.GetHealth() == telemetry.Health_HEALTH_OK {
				p += telemetry.MilliwattsToW(g.GetPowerMw())
			}
		}
		for _, d := range topo.Ancestors(n) {
			pw[d.Key()] += p
			if sl[d.Key()] == nil {
				sl[d.Key()] = make([]float64, len(rep.GetSlotPowerW()))
			}
			for s, v := range rep.GetSlotPowerW() {
				sl[d.Key()][s] += float64(v)
			}
		}
	}
	return pw, sl
}

func near(a, b, tol float64) bool { return a-b <= tol && b-a <= tol }

func keyOf(path []string) string { return strings.Join(path, "/") }
