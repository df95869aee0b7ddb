package alerts

import (
	"strings"
	"testing"

	"github.com/megawatch/megawatch/alerts/aggregate"
	"github.com/megawatch/megawatch/alerts/rules"
)

// The rule source gives each metric the figure its `power:` names, and the
// facility metrics no value without a fresh meter.
func TestSourceFigures(t *testing.T) {
	d := aggregate.DomainState{PowerEstW: 10e6, PowerMaxEstW: 11e6, HeadroomW: 5e6, NodePowerEstW: 16e6,
		MeteredW: 18e6, HasMetered: true, Meters: 2, UnaccountedW: 3e6, FacilityW: 18e6, FacilityMaxW: 19e6, FacilityHeadroomW: -3e6,
		Coverage: 0.95}
	d.Analysis = aggregate.Analysis{HasAnalysis: true, RampWPerS: 1e6, SwingW: 2e6}
	d.Facility = aggregate.Analysis{HasAnalysis: true, RampWPerS: 1.5e6, SwingW: 2.5e6}
	src := source{d}
	f := func(metric, power string, want float64, wantOK bool) {
		t.Helper()
		v, _, ok := src.Value(0, metric, power, []float64{0.2, 3})
		if ok != wantOK || (ok && v != want) {
			t.Errorf("%s power %q: %v %v, want %v %v", metric, power, v, ok, want, wantOK)
		}
	}
	f(rules.MetricPowerMW, rules.PowerGPU, 10, true)
	f(rules.MetricPowerMW, rules.PowerFacility, 18, true)
	f(rules.MetricPowerMaxMW, rules.PowerGPU, 11, true)
	f(rules.MetricPowerMaxMW, rules.PowerFacility, 19, true)
	f(rules.MetricHeadroomMW, rules.PowerGPU, 5, true)
	f(rules.MetricHeadroomMW, rules.PowerFacility, -3, true)
	f(rules.MetricRampMWPerS, rules.PowerGPU, 1, true)
	f(rules.MetricRampMWPerS, rules.PowerFacility, 1.5, true)
	f(rules.MetricSwingMW, rules.PowerGPU, 2, true)
	f(rules.MetricSwingMW, rules.PowerFacility, 2.5, true)
	f(rules.MetricOscillationMW, rules.PowerFacility, 0, false) // no full window yet
	f(rules.MetricUnaccountedMW, rules.PowerFacility, 3, true)
	f(rules.MetricUnaccountedRatio, rules.PowerFacility, 3.0/18, true)
	f(rules.MetricNodePowerMW, rules.PowerGPU, 16, true)
	f(rules.MetricStaleMeters, rules.PowerFacility, 0, true)
	if q := src.Quality(0, rules.PowerFacility); q.Figure != "facility (metered)" || q.Degraded || q.Coverage != 0.95 {
		t.Errorf("metered quality %+v", q)
	}
	if q := src.Quality(0, rules.PowerGPU); q.Figure != "GPU" || q.Degraded {
		t.Errorf("GPU quality %+v", q)
	}

	// Meters stale: no metered value, no unaccounted; the facility figure
	// is the node sum and degraded, the GPU figure is not.
	d.HasMetered, d.MetersStale, d.FacilityW, d.FacilityDegraded = false, 1, d.NodePowerEstW, true
	src = source{d}
	f(rules.MetricUnaccountedMW, rules.PowerFacility, 0, false)
	f(rules.MetricUnaccountedRatio, rules.PowerFacility, 0, false)
	f(rules.MetricStaleMeters, rules.PowerFacility, 1, true)
	f(rules.MetricPowerMW, rules.PowerFacility, 16, true)
	q := src.Quality(0, rules.PowerFacility)
	if q.Figure != "facility (node sum, meters stale)" || !q.Degraded || !strings.Contains(q.Why, "1 of 2 meters stale") {
		t.Errorf("stale quality %+v", q)
	}
	if q := src.Quality(0, rules.PowerGPU); q.Degraded {
		t.Errorf("GPU figure degraded by a stale meter: %+v", q)
	}

	// No meters, low coverage: both degraded, for the coverage.
	d.Meters, d.MetersStale, d.Coverage, d.Degraded = 0, 0, 0.5, true
	src = source{d}
	q = src.Quality(0, rules.PowerFacility)
	if q.Figure != "facility (node sum)" || !q.Degraded || !strings.Contains(q.Why, "50.0% of nodes report") {
		t.Errorf("node-sum quality %+v", q)
	}
	if q := src.Quality(0, rules.PowerGPU); !q.Degraded || !strings.Contains(q.Why, "50.0%") {
		t.Errorf("GPU quality at low coverage %+v", q)
	}
}
