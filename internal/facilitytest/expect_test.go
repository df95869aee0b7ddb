package facilitytest

import (
	"fmt"
	"maps"
	"math"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// state is what the hall serves: the meters' watts, the meters that are
// silent, and the nodes whose collectors are stopped (long enough to be
// missing, beyond stale_after windows).
type state struct {
	meterW map[string]int64
	silent map[string]bool
	down   map[string]bool
}

func (s state) clone() state {
	return state{meterW: maps.Clone(s.meterW), silent: maps.Clone(s.silent), down: maps.Clone(s.down)}
}

// want is a domain's expected rollup figures, in whole watts.
type want struct {
	gpuW, gpuEstW             int64
	nodeW, nodeEstW, modeledW int64
	measured                  int
	reporting, expected       int
	meters, metersStale       int
	metered                   *int64
	// coverable: the topology meters the domain (its own meters, or every
	// child coverable): with every meter fresh it would be metered.
	coverable bool
}

func (w want) coverage() float64 {
	if w.expected == 0 {
		return 1
	}
	return float64(w.reporting) / float64(w.expected)
}

// facility is the figure facility_power_w must carry and its source.
func (w want) facility() (int64, telemetry.FacilitySource) {
	if w.metered != nil {
		return *w.metered, telemetry.FacilitySource_FACILITY_SOURCE_METER
	}
	return w.nodeEstW, telemetry.FacilitySource_FACILITY_SOURCE_NODE
}

// degraded is facility_degraded by the contract: no meter figure where the
// topology meters the domain (stale meters), or none and low coverage.
func (w want) degraded(minCoverage float64) bool {
	return w.metered == nil && (w.coverable || w.coverage() < minCoverage)
}

// unaccountedRatio is unaccounted_w / metered_w (ok false: no metered figure).
func (w want) unaccountedRatio() (float64, bool) {
	if w.metered == nil || *w.metered == 0 {
		return 0, false
	}
	return float64(*w.metered-w.nodeW) / float64(*w.metered), true
}

// expect computes every domain's figures from the node specs and the state
// by the contract's semantics (facility.md): node power of reporting nodes,
// missing nodes at their last known figure in the estimate; a domain is
// metered by its own meters when all are fresh, else by its children when
// every child is metered.
func (h *hall) expect(s state) map[string]want {
	out := map[string]want{}
	var walk func(d *topology.Domain) want
	walk = func(d *topology.Domain) want {
		var w want
		for _, name := range d.Nodes {
			n := h.nodes[name]
			g := int64(n.gpus) * n.gpuW
			w.expected++
			w.gpuEstW += g
			w.nodeEstW += n.nodeW
			if s.down[name] {
				continue
			}
			w.reporting++
			w.gpuW += g
			w.nodeW += n.nodeW
			if n.modeled() {
				w.modeledW += n.nodeW
			} else {
				w.measured++
			}
		}
		childrenMetered := len(d.Children) > 0
		childrenCoverable := len(d.Children) > 0
		var childSum int64
		for _, c := range d.Children {
			cw := walk(c)
			w.gpuW += cw.gpuW
			w.gpuEstW += cw.gpuEstW
			w.nodeW += cw.nodeW
			w.nodeEstW += cw.nodeEstW
			w.modeledW += cw.modeledW
			w.measured += cw.measured
			w.reporting += cw.reporting
			w.expected += cw.expected
			w.meters += cw.meters
			w.metersStale += cw.metersStale
			childrenCoverable = childrenCoverable && cw.coverable
			if cw.metered == nil {
				childrenMetered = false
			} else {
				childSum += *cw.metered
			}
		}
		ownFresh := len(d.Meters) > 0
		var own int64
		for _, m := range d.Meters {
			w.meters++
			if s.silent[m.Name] {
				w.metersStale++
				ownFresh = false
				continue
			}
			own += s.meterW[m.Name]
		}
		w.coverable = len(d.Meters) > 0 || childrenCoverable
		switch {
		case ownFresh:
			w.metered = &own
		case childrenMetered:
			w.metered = &childSum
		}
		out[d.Key()] = w
		return w
	}
	for _, site := range h.topo.Sites() {
		walk(site)
	}
	return out
}

// keys are every domain's key, parents first.
func (h *hall) keys() []string {
	var ks []string
	for _, d := range h.topo.Domains() {
		ks = append(ks, d.Key())
	}
	return ks
}

// check compares one rollup with its expected figures: exact equality of
// every watt figure (the served values are integral watts).
func check(key string, r *telemetry.Rollup, w want, minCoverage float64) error {
	var errs []string
	eq := func(field string, got float64, want int64) {
		if got != float64(want) {
			errs = append(errs, fmt.Sprintf("%s %v, want %d", field, got, want))
		}
	}
	eqi := func(field string, got, want int) {
		if got != want {
			errs = append(errs, fmt.Sprintf("%s %d, want %d", field, got, want))
		}
	}
	eq("power_w (GPU)", r.GetPowerW(), w.gpuW)
	eq("power_est_w (GPU)", r.GetPowerEstW(), w.gpuEstW)
	eq("power_max_w (GPU)", r.GetPowerMaxW(), w.gpuW) // every slot of every GPU is the same
	if d := w.coverage() < minCoverage; r.GetDegraded() != d {
		errs = append(errs, fmt.Sprintf("degraded (GPU telemetry) %v, want %v", r.GetDegraded(), d))
	}
	if r.CpuPowerW != nil {
		errs = append(errs, fmt.Sprintf("cpu_power_w %v, want none (no node has RAPL)", r.GetCpuPowerW()))
	}
	eqi("nodes_reporting", int(r.GetNodesReporting()), w.reporting)
	eqi("nodes_expected", int(r.GetNodesExpected()), w.expected)
	eq("node_power_w", r.GetNodePowerW(), w.nodeW)
	eq("node_power_est_w", r.GetNodePowerEstW(), w.nodeEstW)
	eq("node_power_modeled_w", r.GetNodePowerModeledW(), w.modeledW)
	eqi("nodes_power_measured", int(r.GetNodesPowerMeasured()), w.measured)
	eqi("meters", int(r.GetMeters()), w.meters)
	eqi("meters_stale", int(r.GetMetersStale()), w.metersStale)
	switch {
	case w.metered == nil && r.MeteredW != nil:
		errs = append(errs, fmt.Sprintf("metered_w %v, want none (no fresh meters cover it)", r.GetMeteredW()))
	case w.metered != nil && r.MeteredW == nil:
		errs = append(errs, fmt.Sprintf("no metered_w, want %d", *w.metered))
	case w.metered != nil:
		eq("metered_w", r.GetMeteredW(), *w.metered)
	}
	fw, src := w.facility()
	if r.GetFacilitySource() != src {
		errs = append(errs, fmt.Sprintf("facility_source %v, want %v", r.GetFacilitySource(), src))
	}
	eq("facility_power_w", r.GetFacilityPowerW(), fw)
	eq("facility_power_max_w", r.GetFacilityPowerMaxW(), fw) // constant slots: the 10 Hz estimate is flat
	switch {
	case w.metered == nil && r.UnaccountedW != nil:
		errs = append(errs, fmt.Sprintf("unaccounted_w %v, want none", r.GetUnaccountedW()))
	case w.metered != nil && r.UnaccountedW == nil:
		errs = append(errs, fmt.Sprintf("no unaccounted_w, want %d", *w.metered-w.nodeW))
	case w.metered != nil:
		eq("unaccounted_w", r.GetUnaccountedW(), *w.metered-w.nodeW)
	}
	if d := w.degraded(minCoverage); r.GetFacilityDegraded() != d {
		errs = append(errs, fmt.Sprintf("facility_degraded %v, want %v", r.GetFacilityDegraded(), d))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %s", key, strings.Join(errs, "; "))
	}
	return nil
}

// roundUp rounds w up to a multiple of step.
func roundUp(w float64, step int64) int64 {
	return int64(math.Ceil(w/float64(step))) * step
}

// meterStep is the resolution of a meter's raw value in watts (its scale):
// a value served must be a whole number of it.
func meterStep(t testing.TB, m *topology.Meter) int64 {
	var s float64
	switch {
	case m.SNMP != nil:
		s = m.SNMP.Power.Scale
	case m.Modbus != nil:
		s = m.Modbus.Power.Scale
	}
	if s < 1 || s != math.Trunc(s) {
		t.Fatalf("meter %s: scale %v is not a whole number of watts", m.Name, s)
	}
	return int64(s)
}
