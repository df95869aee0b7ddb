package web_test

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/megawatch/megawatch/alerts/web"
)

// fakeSource is a two-hall site drawing ~41 MW of GPU power and ~50 MW
// of facility power (hall h1 metered by its switchgear, h2's meter stale so
// its figure is the node sum), with a 0.5 Hz, 3 MW oscillation and one
// firing alert: what the page must show. gpuOnly is an aggregator without
// facility power.
type fakeSource struct {
	now      func() time.Time
	calls    atomic.Int64
	degraded bool
	gpuOnly  bool
}

func ptr(v float64) *float64 { return &v }

func newFakeSource() *fakeSource { return &fakeSource{now: time.Now} }

func (f *fakeSource) Snapshot() web.Snapshot {
	f.calls.Add(1)
	now := f.now().Truncate(100 * time.Millisecond)
	series := make([]web.Point, 0, 600)
	for i := 599; i >= 0; i-- {
		t := now.Add(-time.Duration(i) * 100 * time.Millisecond)
		x := float64(t.UnixMilli()) / 1000
		series = append(series, web.Point{T: t.UnixMilli(), MW: 40 + 1.5*math.Sin(2*math.Pi*0.5*x) + float64(600-i)/600})
	}
	hall := func(name string, mw, capMW float64) web.DomainView {
		return web.DomainView{Level: "hall", Path: []string{"dc1", name}, Key: "dc1/" + name,
			PowerMW: mw, PowerEstMW: mw, PowerMaxMW: mw + 1, CapacityMW: capMW, HeadroomMW: capMW - mw,
			NodesReporting: 1440, NodesExpected: 1440, Coverage: 1, RampMWPerS: 0.4, SwingMW: 1.6,
			OscFreqHz: 0.5, OscMW: 1.5, OscFound: true, GPUTempMaxC: 78, ThrottledGPUs: 3}
	}
	h1, h2 := hall("h1", 23.9, 31.5), hall("h2", 17.3, 25)
	h2.NodesReporting, h2.Coverage = 1400, 1400.0/1440
	site := web.DomainView{Level: "site", Path: []string{"dc1"}, Key: "dc1",
		PowerMW: 41.2, PowerEstMW: 41.7, PowerMaxMW: 42.9, CapacityMW: 55, HeadroomMW: 13.8,
		NodesReporting: 2840, NodesExpected: 2880, Coverage: 2840.0 / 2880, RampMWPerS: 0.8,
		SwingMW: 3.1, OscFreqHz: 0.5, OscMW: 3, OscFound: true, GPUTempMaxC: 81, ThrottledGPUs: 5, Degraded: f.degraded}
	if !f.gpuOnly {
		h1.GPUW, h1.NodeW, h1.MeteredW, h1.FacilityW, h1.FacilitySource, h1.UnaccountedW = 23.9e6, 28.6e6, ptr(30.1e6), 30.1e6, "meter", ptr(1.5e6)
		h2.GPUW, h2.NodeW, h2.FacilityW, h2.FacilitySource, h2.MetersStale = 17.3e6, 21.2e6, 21.2e6, "node", 1
		site.GPUW, site.NodeW, site.FacilityW, site.FacilitySource = 41.7e6, 49.8e6, 49.8e6, "node"
		site.FacilityDegraded = f.degraded // its figure is the node sum: degraded with its coverage
	}
	return web.Snapshot{
		At: now, WindowMs: 1000,
		Sites: []web.DomainView{site}, Halls: []web.DomainView{h1, h2},
		SiteSeries: map[string][]web.Point{"dc1": series},
		Alerts: []web.AlertView{{
			Rule: "hall_capacity", Severity: "critical", Level: "hall", Domain: "dc1/h1", State: "firing",
			Value: 0.956, Threshold: 0.95, Summary: "hall dc1/h1 at 95.6% of its 25 MW capacity, a long summary that has to wrap inside its column and not push the Since column out of the panel",
			ActiveSince: now.Add(-95 * time.Second),
		}, {
			Rule: "site_oscillation", Severity: "warning", Level: "site", Domain: "dc1", State: "pending",
			Value: 3, Threshold: 2.5, Summary: "3.0 MW oscillation at 0.50 Hz",
			ActiveSince: now.Add(-4 * time.Second),
		}},
	}
}
