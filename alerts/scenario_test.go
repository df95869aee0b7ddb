package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/notify/webhook"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// amNotification is what Alertmanager's webhook_config posts.
type amNotification struct {
	Status string `json:"status"`
	Alerts []struct {
		Status      string            `json:"status"`
		Labels      map[string]string `json:"labels"`
		Annotations map[string]string `json:"annotations"`
		StartsAt    time.Time         `json:"startsAt"`
		EndsAt      time.Time         `json:"endsAt"`
	} `json:"alerts"`
}

func amNotifications(t *testing.T, r *receiver) []amNotification {
	t.Helper()
	var out []amNotification
	for i := range r.count() {
		var n amNotification
		if err := json.Unmarshal(r.body(i), &n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

func countStatus(ns []amNotification, status string) int {
	c := 0
	for _, n := range ns {
		if n.Status == status {
			c++
		}
	}
	return c
}

// A hall's job ramps above 95 % of its capacity: the page arrives (through
// the real Alertmanager, PagerDuty's and our webhook's receivers) after
// `for`, with MW in the annotation. The alerts process is then restarted
// while the alert fires: no second page. The power falls below the clear
// threshold: the resolve arrives, once, everywhere.
func TestScenarioHallOverCapacityPagesOnceAcrossRestart(t *testing.T) {
	testenv.Short(t)
	amHook, pd, hook := newReceiver(t), newReceiver(t), newReceiver(t)
	am := testenv.StartAlertmanager(t, fmt.Sprintf(`
route:
  receiver: hook
  group_by: [alertname, domain]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
        send_resolved: true
`, amHook.srv.URL))
	job := sim.Job{Name: "big", Nodes: "hall=h1", Start: 20 * time.Second, Stop: 90 * time.Second, Ramp: 10 * time.Second,
		Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.98, CommFrac: 0.98}
	w := newWorld(t, []sim.Job{job}, []rules.Rule{{
		Name: "hall_power_critical", Level: "hall", Metric: rules.MetricPowerMW, Power: rules.PowerGPU, OfCapacity: f(0.95), ClearOfCapacity: f(0.92),
		For: 5 * time.Second, Severity: "critical", Labels: map[string]string{"team": "facility"},
		Annotations: map[string]string{"summary": "hall {{ .Domain }} draws {{ mw .Value }}, above {{ mw .Threshold }} of {{ mw .CapacityMW }}"},
	}})
	t.Setenv("TEST_PD_KEY", "pd-routing-key")
	t.Setenv("TEST_HOOK_SECRET", "s3cret")
	w.cfg.Notifiers.Alertmanager.URLs = []string{am.URL}
	w.cfg.Notifiers.PagerDuty.URL = pd.srv.URL
	w.cfg.Notifiers.PagerDuty.RoutingKeyEnv = "TEST_PD_KEY"
	w.cfg.Notifiers.Webhook = webhook.Config{URL: hook.srv.URL, SecretEnv: "TEST_HOOK_SECRET"}
	w.startEngine()

	var fired notify.Alert
	var firedWall time.Time
	for win := 1; win <= 50; win++ {
		for _, a := range w.window(win) {
			if a.Firing() {
				fired, firedWall = a, time.Now()
			}
		}
	}
	if fired.Rule == "" {
		t.Fatal("hall_power_critical did not fire")
	}
	if fired.Domain != "dc1/h1" || fired.Value <= 19 || fired.Threshold != 19 {
		t.Errorf("fired %+v", fired)
	}
	if held := fired.At.Sub(fired.StartsAt); held < 5*time.Second {
		t.Errorf("fired %s after the first breach, before `for` (5s)", held)
	}
	if s := fired.Annotations["summary"]; !strings.Contains(s, "MW") || !strings.Contains(s, "19.00 MW") {
		t.Errorf("summary %q does not show value and threshold in MW", s)
	}
	waitFor(t, 15*time.Second, "the page through Alertmanager", func() bool { return countStatus(amNotifications(t, amHook), "firing") >= 1 })
	waitFor(t, 5*time.Second, "PagerDuty trigger and webhook", func() bool { return pd.count() >= 1 && hook.count() >= 1 })
	hookLatency := hook.arrival(0).Sub(firedWall)
	n := amNotifications(t, amHook)[0]
	if a := n.Alerts[0]; a.Labels["alertname"] != "hall_power_critical" || a.Labels["hall"] != "h1" || a.Labels["site"] != "dc1" ||
		a.Labels["domain"] != "dc1/h1" || a.Labels["severity"] != "critical" || !strings.Contains(a.Annotations["summary"], "MW") {
		t.Errorf("Alertmanager page: %+v", a)
	}

	// Restart while firing.
	w.stopEngine()
	w.startEngine()
	var resolved notify.Alert
	for win := 51; win <= 100; win++ {
		for _, a := range w.window(win) {
			if a.Firing() {
				t.Errorf("window %d: fired again after restart: %+v", win, a)
			} else {
				resolved = a
			}
		}
	}
	if resolved.Rule == "" || resolved.Value > 0.92*20 {
		t.Fatalf("no resolve below the clear threshold: %+v", resolved)
	}
	waitFor(t, 15*time.Second, "the resolve through Alertmanager", func() bool { return countStatus(amNotifications(t, amHook), "resolved") >= 1 })
	waitFor(t, 5*time.Second, "PagerDuty resolve and webhook", func() bool { return pd.count() >= 2 && hook.count() >= 2 })
	time.Sleep(2500 * time.Millisecond) // two more Alertmanager group intervals: nothing else may arrive
	ns := amNotifications(t, amHook)
	if countStatus(ns, "firing") != 1 || countStatus(ns, "resolved") != 1 {
		t.Errorf("Alertmanager notified %d firing and %d resolved, want 1 and 1: %+v", countStatus(ns, "firing"), countStatus(ns, "resolved"), ns)
	}
	evs := pdEvents(t, pd)
	if len(evs) != 2 || evs[0].EventAction != "trigger" || evs[1].EventAction != "resolve" || evs[0].DedupKey != evs[1].DedupKey ||
		evs[0].DedupKey != "megawatch/hall_power_critical/dc1/h1" || evs[0].RoutingKey != "pd-routing-key" {
		t.Errorf("PagerDuty events: %+v", evs)
	}
	hs := hookAlerts(t, hook)
	if len(hs) != 2 || hs[0].Alerts[0].State != "firing" || hs[1].Alerts[0].State != "resolved" {
		t.Errorf("webhook payloads: %+v", hs)
	}
	// Both alert events reached the MEGAWATCH_ROLLUP stream for Grafana annotations.
	js, _ := jetstream.New(w.nc)
	st, err := js.Stream(context.Background(), telemetry.StreamRollup)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := telemetry.AlertSubject("critical", "hall_power_critical")
	waitFor(t, 5*time.Second, "alert events in the stream", func() bool {
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subj))
		return err == nil && info.State.Subjects[subj] == 2
	})
	// Sample-to-notification latency: the breaching sample lies at most one
	// window before the first breaching window end, the alert fires `for`
	// later (event time), then delivery (wall time).
	lat := time.Second + fired.At.Sub(fired.StartsAt) + hookLatency
	t.Logf("sample-to-notification latency <= %s (window 1s + for %s + delivery %s); bound window+for+1s = 7s", lat, fired.At.Sub(fired.StartsAt), hookLatency)
	if lat > 7*time.Second {
		t.Errorf("latency %s above window + for + 1s", lat)
	}
}

// A synchronised job oscillating at 0.5 Hz with ~20 MW peak-to-peak over
// the campus: the oscillation rule fires and reports 0.5 ± 0.05 Hz; the
// site rollups carry the frequency and amplitude.
func TestScenarioOscillationAtHalfHertz(t *testing.T) {
	testenv.Short(t)
	job := sim.Job{Name: "sync", Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.95, CommFrac: 0.05}
	w := newWorld(t, []sim.Job{job}, []rules.Rule{{
		Name: "site_oscillation", Level: "site", Metric: rules.MetricOscillationMW, Band: []float64{0.2, 3}, Threshold: f(10), Clear: f(6),
		For: 5 * time.Second, Severity: "critical",
		Annotations: map[string]string{"summary": "{{ .Domain }} oscillates {{ mw .Value }} at {{ hz .FreqHz }}"},
	}})
	hook := newReceiver(t)
	w.cfg.Notifiers.Webhook.URL = hook.srv.URL
	w.startEngine()
	rollups := make(chan *nats.Msg, 1000)
	sub, err := w.nc.ChanSubscribe(telemetry.RollupPrefix+".site.dc1", rollups)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var fired notify.Alert
	for win := 1; win <= 70; win++ {
		for _, a := range w.window(win) {
			if a.Firing() {
				fired = a
			}
		}
	}
	if fired.Rule == "" {
		t.Fatal("site_oscillation did not fire")
	}
	var hz float64
	fmt.Sscan(fired.Annotations["freq_hz"], &hz)
	if hz < 0.45 || hz > 0.55 {
		t.Errorf("oscillation reported at %v Hz, want 0.5 ± 0.05", hz)
	}
	if !strings.Contains(fired.Annotations["summary"], "MW") || !strings.Contains(fired.Annotations["summary"], "0.50 Hz") {
		t.Errorf("summary %q", fired.Annotations["summary"])
	}
	waitFor(t, 5*time.Second, "the webhook", func() bool { return hook.count() >= 1 })
	var last telemetry.Rollup
	for len(rollups) > 0 {
		if err := proto.Unmarshal((<-rollups).Data, &last); err != nil {
			t.Fatal(err)
		}
	}
	if last.OscFreqHz == nil || last.GetOscFreqHz() < 0.45 || last.GetOscFreqHz() > 0.55 {
		t.Errorf("site rollup osc_freq_hz %v", last.OscFreqHz)
	}
	swing := last.GetSwingW() / 1e6
	if swing < 17 || swing > 23 {
		t.Errorf("site swing %.1f MW peak-to-peak, want ≈ 20", swing)
	}
	t.Logf("site: %.1f MW, swing %.1f MW pp, dominant %.3f Hz at %.1f MW pp (fundamental of the square wave)", last.GetPowerW()/1e6, swing, last.GetOscFreqHz(), last.GetOscW()/1e6)
}

// 10 % of a hall's nodes fall silent: after stale_after windows they stop
// counting, the coverage alert fires, and the hall rollup shows both the
// measured sum and the estimate that fills them with their last power.
func TestScenarioSilentNodesCoverage(t *testing.T) {
	testenv.Short(t)
	w := newWorld(t, []sim.Job{{Name: "steady", Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.8, CommFrac: 0.8}}, []rules.Rule{{
		Name: "hall_coverage_low", Level: "hall", Metric: rules.MetricCoverage, Threshold: f(0.98), Clear: f(0.99),
		For: 3 * time.Second, Severity: "warning",
		Annotations: map[string]string{"summary": "{{ .Domain }}: {{ pct .Value }} of nodes report"},
	}})
	w.startEngine()
	rollups := make(chan *nats.Msg, 1000)
	sub, err := w.nc.ChanSubscribe(telemetry.RollupPrefix+".hall.dc1.h1", rollups)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	silentSet := func(i int) bool { return i < 500 && i%10 == 0 } // 50 of h1's 500 nodes
	var lastKnown float64
	var fired []notify.Alert
	for win := 1; win <= 25; win++ {
		if win == 11 {
			w.silent = silentSet
			for i := range 500 {
				if silentSet(i) {
					lastKnown += w.fleet.NodePowerW(i, w.end(10), time.Second)
				}
			}
		}
		for _, a := range w.window(win) {
			if a.Firing() {
				fired = append(fired, a)
			}
		}
	}
	if len(fired) != 1 || fired[0].Domain != "dc1/h1" || fired[0].Value != 0.9 {
		t.Fatalf("coverage alerts %+v", fired)
	}
	var last telemetry.Rollup
	for n := range 25 {
		select {
		case m := <-rollups:
			if err := proto.Unmarshal(m.Data, &last); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d hall rollups, want 25", n)
		}
	}
	if last.GetNodesReporting() != 450 || last.GetNodesExpected() != 500 || last.GetStaleNodes() != 50 {
		t.Errorf("rollup nodes %d/%d stale %d", last.GetNodesReporting(), last.GetNodesExpected(), last.GetStaleNodes())
	}
	if d := last.GetPowerEstW() - last.GetPowerW(); d < 0.999*lastKnown || d > 1.001*lastKnown {
		t.Errorf("estimate %.0f W - measured %.0f W = %.0f W, want the silent nodes' last power %.0f W", last.GetPowerEstW(), last.GetPowerW(), d, lastKnown)
	}
	if !slices.ContainsFunc(fired, func(a notify.Alert) bool { return strings.Contains(a.Annotations["summary"], "90.0%") }) {
		t.Errorf("summary %q", fired[0].Annotations["summary"])
	}
	// The live page shows it too.
	snap := w.eng.Snapshot()
	if len(snap.Halls) != 2 || snap.Halls[0].Key != "dc1/h1" || snap.Halls[0].Coverage != 0.9 || snap.Halls[0].PowerEstMW <= snap.Halls[0].PowerMW {
		t.Errorf("snapshot halls %+v", snap.Halls)
	}
	if len(snap.Alerts) != 1 || snap.Alerts[0].Rule != "hall_coverage_low" || snap.Alerts[0].State != "firing" || snap.Alerts[0].Domain != "dc1/h1" {
		t.Errorf("snapshot alerts %+v", snap.Alerts)
	}
}
