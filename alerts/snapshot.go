package alerts

import (
	"time"

	"github.com/megawatch/megawatch/alerts/aggregate"
	"github.com/megawatch/megawatch/alerts/web"
	"github.com/megawatch/megawatch/internal/topology"
)

// Snapshot is the live page's view (web.Source); safe for concurrent use.
func (e *Engine) Snapshot() web.Snapshot { return *e.snap.Load() }

func (e *Engine) snapshot(st []aggregate.DomainState, end time.Time) {
	s := &web.Snapshot{At: end, WindowMs: int(e.cfg.Window.Milliseconds()), SiteSeries: map[string][]web.Point{}}
	var hist []float64
	slot := e.cfg.Slot
	for _, id := range e.agg.Out() {
		d := e.topo.Domains()[id]
		if d.Level != topology.LevelSite && d.Level != topology.LevelHall {
			continue
		}
		v := view(d, &st[id])
		v.LagS = time.Duration(e.lagNs.Load()).Seconds()
		if d.Level == topology.LevelHall {
			s.Halls = append(s.Halls, v)
			continue
		}
		s.Sites = append(s.Sites, v)
		hist = e.agg.History(id, hist)
		pts := make([]web.Point, len(hist))
		for i, w := range hist {
			// slot i ends at end - (n-1-i) slots; plot it at the slot's start
			t := end.Add(-time.Duration(len(hist)-i) * slot)
			pts[i] = web.Point{T: t.UnixMilli(), MW: w / 1e6}
		}
		s.SiteSeries[d.Key()] = pts
	}
	for _, a := range e.eval.Views(end) {
		s.Alerts = append(s.Alerts, web.AlertView{Rule: a.Rule, Severity: a.Severity, Level: a.Level, Domain: a.Domain, State: a.State,
			Value: a.Value, Threshold: a.Threshold, Summary: a.Summary, ActiveSince: a.ActiveSince,
			Coverage: a.Coverage, Degraded: a.Degraded, Held: a.HeldDegraded})
	}
	firing := 0
	for _, a := range s.Alerts {
		if a.State == "firing" {
			firing++
		}
	}
	e.m.firing.Set(float64(firing))
	e.snap.Store(s)
}

func view(d *topology.Domain, s *aggregate.DomainState) web.DomainView {
	v := web.DomainView{Level: d.Level, Path: d.Path, Key: d.Key(), PowerMW: s.PowerW / 1e6, PowerEstMW: s.PowerEstW / 1e6,
		PowerMaxMW: s.PowerMaxW / 1e6, CapacityMW: s.CapacityW / 1e6, HeadroomMW: s.FacilityHeadroomW / 1e6, // as headroom_mw rules: capacity − facility
		NodesReporting: s.NodesReporting, NodesExpected: s.NodesExpected, Coverage: s.Coverage,
		RampMWPerS: s.RampWPerS / 1e6, SwingMW: s.SwingW / 1e6, OscFreqHz: s.OscFreqHz, OscMW: s.OscW / 1e6,
		ThrottledGPUs: s.ThrottledGPUs, Degraded: s.Degraded, OscFound: s.OscFound}
	if s.HasGPUTemp() {
		v.GPUTempMaxC = float64(s.GPUTempMaxC)
	}
	v.GPUW, v.NodeW, v.FacilityW, v.MetersStale, v.FacilityDegraded = s.PowerEstW, s.NodePowerEstW, s.FacilityW, s.MetersStale, s.FacilityDegraded
	v.FacilitySource = "node"
	if s.HasMetered {
		m, u := s.MeteredW, s.UnaccountedW
		v.MeteredW, v.UnaccountedW, v.FacilitySource = &m, &u, "meter"
	}
	return v
}
