package grafana_test

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// checkFacilityPanel asserts what the facility panels return in the
// pipeline fill (configs/topology.yaml: hall h1, its 19 meters, one of
// them stale): the right series, each with values, and the right meters.
// Other panels are left alone.
func checkFacilityPanel(t *testing.T, title, ref string, frames []frame) {
	t.Helper()
	topo, err := topology.Load("../topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	stale := staleMeterName(topo)
	series := map[string]bool{} // name → has a non-null value
	for _, f := range frames {
		names, k := f.names(), 0
		for i, fl := range f.Schema.Fields {
			if fl.Type == "time" {
				continue
			}
			has := false
			if i < len(f.Data.Values) {
				for _, v := range f.Data.Values[i] {
					has = has || (v != nil && v != "")
				}
			}
			if k < len(names) {
				series[names[k]] = series[names[k]] || has
			}
			k++
		}
	}
	want := func(names ...string) {
		t.Helper()
		for _, n := range names {
			if !series[n] {
				t.Errorf("panel %q target %s: no series %q with values (got %v)", title, ref, n, series)
			}
		}
	}
	// tableCol returns the values of column (or tag) name in the answer.
	tableCol := func(name string) []string {
		var out []string
		for _, f := range frames {
			byFrame := strings.HasSuffix(f.Schema.Name, "."+name) // Grafana 9: a frame per column, <measurement>.<column>
			for i, fl := range f.Schema.Fields {
				if (fl.Name == name || (byFrame && fl.Type != "time")) && i < len(f.Data.Values) {
					for _, v := range f.Data.Values[i] {
						out = append(out, fmt.Sprint(v))
					}
				}
				if v, ok := fl.Labels[name]; ok {
					out = append(out, v)
				}
			}
		}
		return out
	}
	switch title + "/" + ref {
	case "Halls: metered vs node vs GPU power/A":
		want("h1 metered", "h1 node", "h1 GPU")
		// GPUs below node power in every interval (the exact figures:
		// checkPipelineFacility).
	case "Facility power vs capacity/A":
		want("dc1 facility", "dc1 facility peak (100 ms est.)", "dc1 capacity")
	case "Facility power vs capacity/B":
		want("h1 facility")
	case "Unaccounted power by hall/A":
		want("h1")
	case "Stale meters by hall/A":
		want("h1 stale", "h1 meters")
	case "Hall: metered vs node vs GPU power/A":
		want("h1 metered", "h1 node", "h1 GPU", "h1 facility", "h1 capacity")
	case "Rows: unaccounted power/A":
		want("r01", "r02")
	case "Stale meter reports/A":
		ms := tableCol("meter")
		if len(ms) == 0 || slices.ContainsFunc(ms, func(m string) bool { return m != stale }) {
			t.Errorf("panel %q: stale meters %v, want only %s", title, ms, stale)
		}
	case "Meters (latest)/A":
		ms := tableCol("meter")
		slices.Sort(ms)
		ms = slices.Compact(ms)
		if len(ms) != len(topo.Meters())-1 || slices.Contains(ms, stale) {
			t.Errorf("panel %q: meters with a reading %v, want the %d fresh ones of configs/topology.yaml", title, ms, len(topo.Meters())-1)
		}
	case "Meters (latest)/B":
		if ms := tableCol("meter"); strings.Join(ms, ",") != stale {
			t.Errorf("panel %q: meters with stale reports %v, want %s", title, ms, stale)
		}
	}
}

// facilityPanels are the panel/target pairs checkFacilityPanel checks.
var facilityPanels = []string{
	"Halls: metered vs node vs GPU power/A", "Facility power vs capacity/A", "Facility power vs capacity/B",
	"Unaccounted power by hall/A", "Stale meters by hall/A", "Hall: metered vs node vs GPU power/A",
	"Rows: unaccounted power/A", "Stale meter reports/A", "Meters (latest)/A", "Meters (latest)/B",
}

// TestFacilityPanelsExist: every panel checkFacilityPanel expects is in a
// shipped dashboard (a renamed panel would skip its check silently).
func TestFacilityPanelsExist(t *testing.T) {
	have := map[string]bool{}
	for _, d := range loadDashboards(t) {
		for _, p := range flatPanels(d.Panels) {
			for _, tg := range p.Targets {
				have[p.Title+"/"+tg.RefID] = true
			}
		}
	}
	for _, k := range facilityPanels {
		if !have[k] {
			t.Errorf("no panel/target %q in the dashboards", k)
		}
	}
}

// checkPipelineFacility: in the pipeline fill, the real aggregator's hall
// rollups carry what the meters read: the switchgear meter reads the
// hall's node power × meterLoss, so metered_mw / node_power_mw is
// meterLoss in every window where every node reported in time (a late
// node report is missing from that window's node power while the meter
// reads it: unaccounted power grows, by design; a late meter report is
// held), and GPU power is below node power.
func checkPipelineFacility(t *testing.T, infl *testenv.Influxd) {
	t.Helper()
	s := infl.Query(t, db, `SELECT "metered_mw", "node_power_mw", "power_mw", "unaccounted_mw" FROM "rollup_1y"."rollup" WHERE "level" = 'hall' AND "stale_nodes" = 0`)
	n, exact := 0, 0
	var ratios []string
	for _, se := range s {
		for _, v := range se.Values {
			num := func(x any) (float64, bool) {
				j, ok := x.(json.Number)
				if !ok {
					return 0, false
				}
				f, err := j.Float64()
				return f, err == nil
			}
			metered, ok1 := num(v[1])
			node, ok2 := num(v[2])
			gpu, ok3 := num(v[3])
			unacc, ok4 := num(v[4])
			if !ok1 || !ok2 || !ok3 || !ok4 {
				continue
			}
			n++
			r := metered / node
			ratios = append(ratios, fmt.Sprintf("%.4f", r))
			if r > meterLoss*0.995 && r < meterLoss*1.005 {
				exact++
			}
			if !(gpu < node) || math.Abs(unacc-(metered-node)) > 1e-9 {
				t.Errorf("hall rollup %v: GPU %v, node %v, metered %v, unaccounted %v MW", v[0], gpu, node, metered, unacc)
			}
		}
	}
	if exact == 0 {
		t.Errorf("hall rollups: metered/node power %v in %d windows, want %.2f (±0.5%%) in at least one", ratios, n, meterLoss)
	}
	t.Logf("hall metered/node power %v (%d of %d windows at %.2f)", ratios, exact, n, meterLoss)
}
