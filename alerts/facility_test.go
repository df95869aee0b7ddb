package alerts

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// Capacity rules evaluate facility power by default: a row whose meter
// reads beyond the threshold pages although its GPU power is far below;
// with the meter stale the facility figure falls back to the node sum, and
// the page is held (not resolved) and says why; the divergence rule has no
// value then and keeps its state; with the meter back and low, both
// resolve. The same rule on GPU power never fires.
func TestFacilityRulesFollowTheMeter(t *testing.T) {
	topo, fl := meterTopoFleet(t)
	cfg := DefaultConfig()
	cfg.HTTPAddr = ""
	cfg.Notifiers.Log.Enabled, cfg.Notifiers.NATS.Enabled = false, false
	cfg.Rules = []rules.Rule{
		{Name: "row_fac", Level: "row", Metric: rules.MetricPowerMW, OfCapacity: f(0.5), ClearOfCapacity: f(0.4), Severity: "critical"},
		{Name: "row_gpu", Level: "row", Metric: rules.MetricPowerMW, Power: rules.PowerGPU, OfCapacity: f(0.5), ClearOfCapacity: f(0.4), Severity: "critical"},
		{Name: "row_div", Level: "row", Metric: rules.MetricUnaccountedRatio, Threshold: f(0.2), Clear: f(0.15), Severity: "warning"},
	}
	e, err := New(cfg, topo, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1800000000, 0)
	var rep telemetry.NodeReport
	step := func(w int, meterW float64) []notify.Alert {
		t.Helper()
		end := t0.Add(time.Duration(w) * time.Second)
		for i, n := range topo.Nodes() {
			fl.Report(&rep, i, end, cfg.Window, cfg.Slot)
			b, _ := proto.Marshal(&rep)
			subj, _ := telemetry.PowerSubject(n.Location)
			if err := e.agg.HandleReport(subj, b); err != nil {
				t.Fatal(err)
			}
		}
		m := &telemetry.MeterReport{Meter: "bus-r1", Level: "row", Path: []string{"dc1", "h1", "r1"}, WindowEndUnixNs: end.UnixNano(), WindowMs: 1000}
		if meterW > 0 {
			m.PowerW = &meterW
		} else {
			m.Stale, m.Error = true, "timeout"
		}
		b, _ := proto.Marshal(m)
		subj, _ := telemetry.MeterSubject(m.Path, m.Meter)
		if err := e.agg.HandleMeter(subj, b); err != nil {
			t.Fatal(err)
		}
		return e.Tick(context.Background(), end)
	}
	names := func(as []notify.Alert) string {
		var s []string
		for _, a := range as {
			s = append(s, a.Rule+":"+a.State)
		}
		return strings.Join(s, " ")
	}
	// 600 kW metered on a 1 MW row: the facility rule (500 kW) fires, the
	// GPU one does not; most of the metered power is unaccounted.
	got := step(0, 600e3)
	if names(got) != "row_fac:firing row_div:firing" {
		t.Fatalf("metered 600 kW: %q", names(got))
	}
	if a := got[0]; a.Value != 0.6 || a.Annotations["power"] != "facility (metered)" {
		t.Fatalf("facility alert %v %v", a.Value, a.Annotations)
	}
	// Meter stale for longer than it is held: the node sum is far below
	// clear, but the facility alert is held and the divergence has no value.
	for w := 1; w <= cfg.StaleAfter+3; w++ {
		if got := step(w, 0); len(got) != 0 {
			t.Fatalf("window %d, meter stale: %q (want nothing resolved)", w, names(got))
		}
	}
	act := e.eval.Active(t0.Add(time.Duration(cfg.StaleAfter+3) * time.Second))
	if len(act) != 2 || act[0].Rule != "row_fac" || act[0].Annotations["power"] != "facility (node sum, meters stale)" ||
		!strings.Contains(act[0].Annotations["telemetry"], "1 of 1 meters stale") || !strings.Contains(act[0].Annotations["telemetry"], "stays firing") {
		t.Fatalf("held alerts: %+v", act)
	}
	// The meter is back, reading what the nodes draw (+ a few %): both resolve.
	st := e.agg.Tick(t0.Add(time.Duration(cfg.StaleAfter+4) * time.Second)) // a window with no new reports, to read the node sum
	nodeW := st[topo.DomainsAt("row")[0].ID].NodePowerEstW
	if nodeW <= 0 || nodeW > 0.3e6 {
		t.Fatalf("row node power %v W", nodeW)
	}
	if got := step(cfg.StaleAfter+5, nodeW*1.03); names(got) != "row_fac:resolved row_div:resolved" {
		t.Fatalf("meter back at %.0f W: %q", nodeW*1.03, names(got))
	}
}
