package alerts

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/testenv"
)

// amAlert is one alert as Alertmanager's /api/v2/alerts lists it.
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// amActive lists the alerts Alertmanager holds active (not resolved).
func amActive(t *testing.T, base, alertname string) []amAlert {
	t.Helper()
	u := base + "/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=true"
	if alertname != "" {
		u += "&filter=alertname%3D%22" + alertname + "%22"
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var as []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&as); err != nil {
		t.Fatal(err)
	}
	var out []amAlert
	for _, a := range as {
		if a.EndsAt.After(time.Now()) {
			out = append(out, a)
		}
	}
	return out
}

func amHookConfig(url string) string {
	return fmt.Sprintf(`
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
`, url)
}

// A hall above 95 % of its capacity loses 60 % of its nodes' reports for
// 60 s while the page fires, and its load drops meanwhile (what the silent
// nodes do is unknown). No resolve is sent while coverage is low — the
// alert stays firing at Alertmanager with the coverage in its annotations —
// and the resolve comes once coverage is back and power is below clear.
func TestScenarioReportLossWhileFiringDoesNotResolve(t *testing.T) {
	testenv.Short(t)
	amHook := newReceiver(t)
	am := testenv.StartAlertmanager(t, amHookConfig(amHook.srv.URL))
	job := sim.Job{Name: "big", Nodes: "hall=h1", Start: 5 * time.Second, Stop: 70 * time.Second, Ramp: 5 * time.Second,
		Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.98, CommFrac: 0.98}
	w := newWorld(t, []sim.Job{job}, []rules.Rule{{
		Name: "hall_power_critical", Level: "hall", Domains: []string{"dc1/h1"}, Metric: rules.MetricPowerMW, Power: rules.PowerGPU, OfCapacity: f(0.95), ClearOfCapacity: f(0.92),
		For: 3 * time.Second, Severity: "critical",
		Annotations: map[string]string{"summary": "hall {{ .Domain }} draws {{ mw .Value }} ({{ pct .Coverage }} of nodes report)"},
	}})
	w.cfg.Notifiers.Alertmanager.URLs = []string{am.URL}
	w.cfg.Notifiers.Alertmanager.ResendInterval = 2 * time.Second
	w.startEngine()
	lossFrom, lossTo := 30, 90 // windows (s) with 60 % of h1's nodes silent
	w.silent = func(i int) bool { return false }
	var fired, resolved []notify.Alert
	for win := 1; win <= 110; win++ {
		if win == lossFrom {
			w.silent = func(i int) bool { return i < 500 && i%5 < 3 }
		}
		if win == lossTo {
			w.silent = nil
		}
		for _, a := range w.window(win) {
			if a.Firing() {
				fired = append(fired, a)
			} else {
				resolved = append(resolved, a)
				if win < lossTo {
					t.Errorf("window %d: resolved during the report loss: %+v", win, a)
				}
			}
		}
		if win == lossTo-5 {
			// Well into the loss, with the job stopped: the measured power of
			// the 40 % that report is far below clear; the page still fires at
			// Alertmanager, and says how much is estimated.
			st := w.eng.Snapshot()
			if st.Halls[0].Coverage > 0.41 || !st.Halls[0].Degraded {
				t.Fatalf("window %d: hall h1 coverage %v degraded %v, want 40 %% and degraded", win, st.Halls[0].Coverage, st.Halls[0].Degraded)
			}
			if st.Halls[0].PowerMW > 0.92*20 {
				t.Fatalf("window %d: measured %v MW, want the stopped job's low power (the case missing data would resolve)", win, st.Halls[0].PowerMW)
			}
			waitFor(t, 10*time.Second, "the held page at Alertmanager with its coverage", func() bool {
				as := amActive(t, am.URL, "hall_power_critical")
				return len(as) == 1 && as[0].Annotations["coverage"] == "40.0%" && strings.Contains(as[0].Annotations["telemetry"], "stays firing") &&
					strings.Contains(as[0].Annotations["summary"], "40.0% of nodes report")
			})
		}
	}
	if len(fired) != 1 || fired[0].At.After(w.end(lossFrom)) {
		t.Fatalf("fired %+v, want one page before the loss", fired)
	}
	if len(resolved) != 1 || resolved[0].At.Before(w.end(lossTo)) || resolved[0].Value > 0.92*20 || resolved[0].Annotations["coverage"] != "100.0%" {
		t.Fatalf("resolved %+v, want one resolve after coverage is back, below clear", resolved)
	}
	waitFor(t, 15*time.Second, "the resolve through Alertmanager", func() bool { return countStatus(amNotifications(t, amHook), "resolved") >= 1 })
	if ns := amNotifications(t, amHook); countStatus(ns, "firing") != 1 || countStatus(ns, "resolved") != 1 {
		t.Errorf("Alertmanager notified %d firing and %d resolved, want 1 and 1", countStatus(ns, "firing"), countStatus(ns, "resolved"))
	}
}

// A flat-loaded site: 20 % of its nodes leave (silent past stale_after) and
// rejoin, twice, and a hall that was never heard joins. With ramp and
// oscillation thresholds far below the step that coverage changes used to
// make, nothing pages; the coverage alert shows the loss was real.
func TestScenarioNodesLeaveAndRejoinNoRampPage(t *testing.T) {
	testenv.Short(t)
	amHook := newReceiver(t)
	am := testenv.StartAlertmanager(t, amHookConfig(amHook.srv.URL))
	w := newWorld(t, []sim.Job{{Name: "flat", Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.8, CommFrac: 0.8}}, []rules.Rule{
		{Name: "site_ramp", Level: "site", Metric: rules.MetricRampMWPerS, Threshold: f(1), Clear: f(0.5), Severity: "critical"},
		{Name: "site_swing", Level: "site", Metric: rules.MetricSwingMW, Threshold: f(1.5), Severity: "critical"},
		{Name: "site_oscillation", Level: "site", Metric: rules.MetricOscillationMW, Band: []float64{0.1, 3}, Threshold: f(0.5), Severity: "critical"},
		{Name: "hall_coverage_low", Level: "hall", Metric: rules.MetricCoverage, Threshold: f(0.9), Severity: "warning"},
	})
	w.cfg.Notifiers.Alertmanager.URLs = []string{am.URL}
	w.startEngine()
	leave := func(i int) bool { return i%5 == 0 }   // 20 % of every hall
	newHall := func(i int) bool { return i >= 500 } // hall h2 (50 nodes, ≈ 1.6 MW), heard from window 50 on
	var fired []notify.Alert
	var power float64
	for win := 1; win <= 90; win++ {
		gone := (win >= 15 && win < 35) || (win >= 55 && win < 70)
		w.silent = func(i int) bool { return (gone && leave(i)) || (win < 50 && newHall(i)) }
		for _, a := range w.window(win) {
			if a.Firing() {
				fired = append(fired, a)
			}
		}
		power = w.eng.Snapshot().Sites[0].PowerEstMW
	}
	var pages []string
	covered := false
	for _, a := range fired {
		if a.Rule == "hall_coverage_low" {
			covered = true
			continue
		}
		pages = append(pages, fmt.Sprintf("%s at %s: %.2f", a.Rule, a.At.Format("15:04:05"), a.Value))
	}
	if len(pages) > 0 {
		t.Fatalf("nodes leaving and rejoining a flat %.1f MW site paged: %v", power, pages)
	}
	if !covered {
		t.Fatal("the coverage alert did not fire: the nodes did not leave")
	}
	waitFor(t, 15*time.Second, "the coverage alert at Alertmanager", func() bool { return countStatus(amNotifications(t, amHook), "firing") >= 1 })
	time.Sleep(1500 * time.Millisecond) // a group interval: nothing else may arrive
	for _, n := range amNotifications(t, amHook) {
		for _, a := range n.Alerts {
			if a.Labels["alertname"] != "hall_coverage_low" {
				t.Errorf("Alertmanager notified %s", a.Labels["alertname"])
			}
		}
	}
}
