package grafana_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

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
		// The hall's switchgear meter reads its node power × meterLoss
		// (facility_fill_test.go); the real aggregator's figures (and the
		// history before them) must say so, with the GPUs below both.
		byTime := map[string]map[float64]float64{}
		for _, f := range frames {
			if len(f.Data.Values) < 2 || len(f.names()) != 1 {
				continue
			}
			m := map[float64]float64{}
			for i, ts := range f.Data.Values[0] {
				tv, ok1 := ts.(float64)
				v, ok2 := f.Data.Values[1][i].(float64)
				if ok1 && ok2 {
					m[tv] = v
				}
			}
			byTime[f.names()[0]] = m
		}
		n := 0
		for ts, metered := range byTime["h1 metered"] {
			node, ok1 := byTime["h1 node"][ts]
			gpu, ok2 := byTime["h1 GPU"][ts]
			if !ok1 || !ok2 {
				continue
			}
			n++
			if r := metered / node; r < meterLoss*0.98 || r > meterLoss*1.02 || !(gpu < node) {
				t.Errorf("panel %q at %v: metered %v MW, node %v MW (ratio %.4f, want %.2f), GPU %v MW", title, ts, metered, node, r, meterLoss, gpu)
			}
		}
		if n == 0 {
			t.Errorf("panel %q: no interval with metered, node and GPU power", title)
		}
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
