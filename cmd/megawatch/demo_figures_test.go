package main

import (
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/web"
)

func mwPtr(w float64) *float64 { return &w }

// TestDemoPrintsThreeFigures: the demo's terminal lines put each domain's
// facility figure against capacity and the GPU, node and metered figures
// side by side, with the unaccounted power and the source; "stale" for a
// meter without a fresh reading, "—" for none, and GPU power only (as
// before) from an aggregator without facility power.
func TestDemoPrintsThreeFigures(t *testing.T) {
	site := web.DomainView{Level: "site", Path: []string{"demo"}, Key: "demo", PowerEstMW: 5.1, CapacityMW: 20, Coverage: 1,
		GPUW: 5.1e6, NodeW: 9.3e6, FacilityW: 9.3e6, FacilitySource: "node", MetersStale: 0}
	h1 := web.DomainView{Level: "hall", Path: []string{"demo", "h1"}, Key: "demo/h1", PowerEstMW: 2.6, CapacityMW: 10, Coverage: 1,
		GPUW: 2.6e6, NodeW: 4.7e6, MeteredW: mwPtr(5.3e6), FacilityW: 5.3e6, FacilitySource: "meter", UnaccountedW: mwPtr(0.6e6)}
	h2 := web.DomainView{Level: "hall", Path: []string{"demo", "h2"}, Key: "demo/h2", PowerEstMW: 2.5, CapacityMW: 10, Coverage: 1,
		GPUW: 2.5e6, NodeW: 4.6e6, FacilityW: 4.6e6, FacilitySource: "node", MetersStale: 1}
	var b strings.Builder
	printSnapshot(&b, web.Snapshot{Sites: []web.DomainView{site}, Halls: []web.DomainView{h1, h2}}, 12*time.Second, "training")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for i, want := range []string{
		"site demo      9.3 /  20.0 MW [#########...........]  47%  GPU   5.1 · node   9.3 · metered     — · unacc.     — MW (node sum)",
		"hall h1        5.3 /  10.0 MW [###########.........]  53%  GPU   2.6 · node   4.7 · metered   5.3 · unacc.   0.6 MW (meter)  headroom   4.7 MW",
		"hall h2        4.6 /  10.0 MW [#########...........]  46%  GPU   2.5 · node   4.6 · metered stale · unacc.     — MW (node sum)  headroom   5.4 MW",
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d:\n%s\nwant it to contain\n%s", i, lines[i], want)
		}
	}
	// An aggregator without facility power: GPU power against capacity.
	h1.FacilitySource = ""
	b.Reset()
	printSnapshot(&b, web.Snapshot{Halls: []web.DomainView{h1}}, 0, "")
	if want := "hall h1        2.6 /  10.0 MW [#####...............]  26%  GPU   2.6 · node     — · metered     — · unacc.     — MW (GPU only)"; !strings.Contains(b.String(), want) {
		t.Errorf("GPU only:\n%s\nwant\n%s", b.String(), want)
	}
}
