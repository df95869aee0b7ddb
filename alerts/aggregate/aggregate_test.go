package aggregate

import (
	"errors"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

func TestRollupSumsEqualNodePowers(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	f := newFleet(t, topo)
	a, err := New(testConfig(), topo)
	if err != nil {
		t.Fatal(err)
	}
	for w := 1; w <= 5; w++ {
		end := testEpoch.Add(time.Duration(w) * time.Second)
		rs := reports(t, topo, f, end, nil)
		feed(t, a, rs)
		wantP, wantS := nodeSums(t, topo, rs)
		st := a.Tick(end)
		if len(a.Out()) != len(topo.Domains()) {
			t.Fatalf("out %d domains, want %d", len(a.Out()), len(topo.Domains()))
		}
		for _, d := range topo.Domains() {
			got := st[d.ID]
			if !near(got.PowerW, wantP[d.Key()], 1e-6*wantP[d.Key()]) {
				t.Errorf("window %d %s %s: power %.3f W, nodes sum %.3f W", w, d.Level, d.Key(), got.PowerW, wantP[d.Key()])
			}
			// and against the simulator's own truth (mW rounding per GPU)
			simP := 0.0
			for _, n := range topo.Nodes() {
				if d.Contains(n) {
					simP += f.NodePowerW(n.Index, end, testWindow)
				}
			}
			if !near(got.PowerW, simP, 0.01*float64(d.NodesExpected)) {
				t.Errorf("window %d %s: power %.3f W, simulator %.3f W", w, d.Key(), got.PowerW, simP)
			}
			for s, v := range got.Slots {
				if !near(v, wantS[d.Key()][s], 1e-9) {
					t.Errorf("%s slot %d: %v, want %v", d.Key(), s, v, wantS[d.Key()][s])
				}
			}
			if got.NodesReporting != d.NodesExpected || got.Coverage != 1 || got.PowerEstW != got.PowerW {
				t.Errorf("%s: reporting %d/%d coverage %v est %v", d.Key(), got.NodesReporting, d.NodesExpected, got.Coverage, got.PowerEstW)
			}
			if got.HeadroomW != d.CapacityW-got.PowerW || got.GPUs != 8*d.NodesExpected || !got.HasGPUTemp() {
				t.Errorf("%s: headroom %v gpus %d temp %v", d.Key(), got.HeadroomW, got.GPUs, got.GPUTempMaxC)
			}
		}
	}
}

func TestSilentNodesHeldThenEstimated(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	f := newFleet(t, topo)
	a, _ := New(testConfig(), topo)
	silent := func(i int) bool { return i%10 == 0 } // 5 of 48
	for w := 1; w <= 10; w++ {
		end := testEpoch.Add(time.Duration(w) * time.Second)
		var skip func(int) bool
		if w > 2 {
			skip = silent
		}
		rs := reports(t, topo, f, end, skip)
		feed(t, a, rs)
		st := a.Tick(end)
		site := st[topo.Sites()[0].ID]
		switch {
		case w <= 2:
		case w <= 2+3: // held with their last power for stale_after windows
			if site.NodesReporting != 48 || site.NodesHeld != 5 || site.StaleNodes != 0 {
				t.Errorf("window %d: reporting %d held %d stale %d", w, site.NodesReporting, site.NodesHeld, site.StaleNodes)
			}
		default:
			if site.NodesReporting != 43 || site.StaleNodes != 5 || !near(site.Coverage, 43.0/48, 1e-12) {
				t.Errorf("window %d: reporting %d stale %d coverage %v", w, site.NodesReporting, site.StaleNodes, site.Coverage)
			}
			measured, _ := nodeSums(t, topo, rs)
			if !near(site.PowerW, measured["dc1"], 1e-6) {
				t.Errorf("window %d: power %v, want the measured sum %v", w, site.PowerW, measured["dc1"])
			}
			missing := 0.0
			for i := range topo.Nodes() {
				if silent(i) {
					missing += f.NodePowerW(i, testEpoch.Add(2*time.Second), testWindow)
				}
			}
			if !near(site.PowerEstW, site.PowerW+missing, 0.1) {
				t.Errorf("window %d: estimate %v, want measured %v + last known %v", w, site.PowerEstW, site.PowerW, missing)
			}
		}
	}
}

func TestLateReportLandsInItsWindow(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	f := newFleet(t, topo)
	a, _ := New(testConfig(), topo)
	w1, w2 := testEpoch.Add(time.Second), testEpoch.Add(2*time.Second)
	r1 := reports(t, topo, f, w1, nil)
	r2 := reports(t, topo, f, w2, nil)
	feed(t, a, r2[:10]) // the next window's first reports arrive before the rest of w1
	feed(t, a, r1)
	want, _ := nodeSums(t, topo, r1)
	st := a.Tick(w1)
	if got := st[0].PowerW; !near(got, want["dc1"], 1e-6) || st[0].NodesReporting != 48 {
		t.Fatalf("w1 power %v (%d nodes), want %v", got, st[0].NodesReporting, want["dc1"])
	}
	feed(t, a, r2[10:])
	if err := a.HandleReport(r1[0].subject, r1[0].data); !errors.Is(err, ErrLate) {
		t.Fatalf("report for a ticked window: %v, want ErrLate", err)
	}
	want, _ = nodeSums(t, topo, r2)
	if got := a.Tick(w2)[0].PowerW; !near(got, want["dc1"], 1e-6) {
		t.Fatalf("w2 power %v, want %v", got, want["dc1"])
	}
}

func TestRejectsReportsThatDoNotMatch(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	a, _ := New(testConfig(), topo)
	rep := &telemetry.NodeReport{Site: "dc1", Hall: "h1", Row: "r1", Rack: "k1", Node: "n-h1-r1-p1-k1-1", WindowEndUnixNs: testEpoch.UnixNano(), WindowMs: 1000, SlotMs: 100}
	good, _ := telemetry.PowerSubject(telemetry.ReportLocation(rep))
	f := func(subject string, mut func(r *telemetry.NodeReport), want error) {
		t.Helper()
		r := proto.Clone(rep).(*telemetry.NodeReport)
		mut(r)
		b, _ := proto.Marshal(r)
		if err := a.HandleReport(subject, b); !errors.Is(err, want) {
			t.Errorf("got %v, want %v", err, want)
		}
	}
	f(good, func(r *telemetry.NodeReport) {}, nil)
	f(good, func(r *telemetry.NodeReport) { r.Node = "nobody" }, ErrUnknownNode)
	f(good, func(r *telemetry.NodeReport) { r.Node = "n-h2-r1-p1-k1-1" }, ErrMismatch)
	f(good, func(r *telemetry.NodeReport) { r.WindowMs = 500 }, ErrShape)
	f(good, func(r *telemetry.NodeReport) { r.WindowEndUnixNs += 3e8 }, ErrShape)
	if err := a.HandleReport(good, []byte{0xff, 0xff}); err == nil {
		t.Error("garbage accepted")
	}
	if s := a.Stats(); s.Accepted != 1 || s.Unknown != 1 || s.Mismatch != 1 || s.Shape != 2 || s.Decode != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestOscillationFoundAtJobFrequency(t *testing.T) {
	topo := parseTopo(t, pduTopo)
	job := sim.Job{Name: "sync", Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.95, CommFrac: 0.3}
	f := newFleet(t, topo, job)
	cfg := testConfig()
	a, _ := New(cfg, topo)
	var st []DomainState
	// A full analysis window after the warm-up (stale_after+1 windows).
	for w := 1; w <= 61+cfg.StaleAfter+1; w++ {
		end := testEpoch.Add(time.Duration(w) * time.Second)
		feed(t, a, reports(t, topo, f, end, nil))
		st = a.Tick(end)
	}
	site := st[0]
	if !site.HasOsc || !near(site.OscFreqHz, 0.5, 0.05) {
		t.Fatalf("oscillation %v Hz (has %v), want 0.5", site.OscFreqHz, site.HasOsc)
	}
	// a square wave between comm and compute power: the fundamental's
	// peak-to-peak is 4/π of the square's
	if site.SwingW <= 0 || site.OscW < 0.8*site.SwingW || site.OscW > 1.6*site.SwingW {
		t.Errorf("osc %v W peak-to-peak, swing %v W", site.OscW, site.SwingW)
	}
	if site.RampWPerS <= 0 {
		t.Errorf("ramp %v", site.RampWPerS)
	}
	t.Logf("site: power %.1f kW, swing %.1f kW, osc %.3f Hz %.1f kW pp, ramp %.1f kW/s", site.PowerW/1e3, site.SwingW/1e3, site.OscFreqHz, site.OscW/1e3, site.RampWPerS/1e3)
}

// An aggregator that starts (or restarts) while a campus is running sees
// only part of the nodes in its first windows. That climb to the campus's
// real power is not a ramp: no ramp, swing or oscillation is reported
// until every node has had stale_after+1 windows to be heard from, and the
// ramp reported after that is the campus's own.
func TestNoRampFromStartingMidStream(t *testing.T) {
	topo := bigTopo(t, 2, 2, 4) // 288 nodes
	// A steady job: power does not change from window to window.
	f := newFleet(t, topo, sim.Job{Name: "steady", Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.9, CommFrac: 0.9})
	cfg := testConfig()
	a, err := New(cfg, topo)
	if err != nil {
		t.Fatal(err)
	}
	siteID := topo.Sites()[0].ID
	var maxRamp float64
	for w := 1; w <= 12; w++ {
		end := testEpoch.Add(time.Hour + time.Duration(w)*time.Second)
		// Window 1: a third of the nodes were heard before the first tick.
		feed(t, a, reports(t, topo, f, end, func(i int) bool { return w == 1 && i%3 != 0 }))
		st := a.Tick(end)[siteID]
		if w <= cfg.StaleAfter+2 && st.HasAnalysis {
			t.Fatalf("window %d: analysis reported during warm-up (ramp %.0f W/s)", w, st.RampWPerS)
		}
		if st.HasAnalysis {
			maxRamp = max(maxRamp, st.RampWPerS)
		}
	}
	// The steady job's own ramp is noise: far below the 2/3 of the site
	// that appeared after the first window.
	site := topo.Sites()[0]
	if maxRamp <= 0 || maxRamp > 0.05*float64(site.NodesExpected)*8*700 {
		t.Fatalf("ramp after warm-up %.0f W/s, want only the steady job's noise", maxRamp)
	}
}
