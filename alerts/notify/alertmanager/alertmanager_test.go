package alertmanager

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/internal/testenv"
)

const amConfig = `
route:
  receiver: devnull
receivers:
  - name: devnull
`

type gettable struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func activeAlerts(t *testing.T, base string) []gettable {
	t.Helper()
	resp, err := http.Get(base + "/api/v2/alerts?active=true&silenced=false&inhibited=false")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []gettable
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Two real Alertmanagers (send to all): a firing alert shows up in both
// with our labels and MW annotations and an endsAt 4 resend intervals
// ahead; the resolve (endsAt = resolve time) ends it in both.
func TestFiringAndResolveInRealAlertmanagers(t *testing.T) {
	ams := []*testenv.Alertmanager{testenv.StartAlertmanager(t, amConfig), testenv.StartAlertmanager(t, amConfig)}
	levels := []string{"site", "hall", "row", "rack"}
	now := time.Now().Truncate(time.Second)
	a := notify.Alert{Rule: "hall_power_critical", Severity: "critical", Level: "hall", Domain: "dc1/h1", Path: []string{"dc1", "h1"},
		State: notify.StateFiring, Metric: "power_mw", Unit: "MW", Value: 19.6, Threshold: 19, Labels: map[string]string{"team": "facility"},
		Annotations: map[string]string{"summary": "hall dc1/h1 draws 19.60 MW, above 19.00 MW"}, StartsAt: now.Add(-time.Minute), At: now, Fingerprint: "x"}
	var ns []*Notifier
	for _, am := range ams {
		n := New(am.URL, time.Minute, levels, nil)
		if n.ResendInterval() != time.Minute {
			t.Fatal(n.ResendInterval())
		}
		ns = append(ns, n)
		if _, err := n.Notify(context.Background(), []notify.Alert{a}); err != nil {
			t.Fatal(err)
		}
	}
	for i, am := range ams {
		got := activeAlerts(t, am.URL)
		if len(got) != 1 {
			t.Fatalf("am %d: %d active alerts", i, len(got))
		}
		g := got[0]
		want := map[string]string{"alertname": "hall_power_critical", "severity": "critical", "level": "hall", "domain": "dc1/h1", "site": "dc1", "hall": "h1", "team": "facility"}
		for k, v := range want {
			if g.Labels[k] != v {
				t.Errorf("am %d label %s = %q, want %q", i, k, g.Labels[k], v)
			}
		}
		if g.Annotations["summary"] != a.Annotations["summary"] || !g.StartsAt.Equal(a.StartsAt) || g.EndsAt.Before(now.Add(3*time.Minute)) || g.Status.State != "active" {
			t.Errorf("am %d: %+v", i, g)
		}
	}
	a.State, a.EndsAt = notify.StateResolved, now.Add(-time.Second)
	for _, n := range ns {
		if _, err := n.Notify(context.Background(), []notify.Alert{a}); err != nil {
			t.Fatal(err)
		}
	}
	for i, am := range ams {
		if got := activeAlerts(t, am.URL); len(got) != 0 {
			t.Errorf("am %d: still active after resolve: %+v", i, got)
		}
	}
}

func TestBadRequestIsNotRetried(t *testing.T) {
	am := testenv.StartAlertmanager(t, amConfig)
	n := New(am.URL, time.Minute, nil, nil)
	// no alertname-worthy label set: an empty label name is invalid
	retry, err := n.Notify(context.Background(), []notify.Alert{{State: notify.StateFiring, Labels: map[string]string{"": "x"}}})
	if err == nil || retry {
		t.Fatalf("retry %v err %v", retry, err)
	}
}
