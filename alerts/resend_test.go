package alerts

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/testenv"
)

// Firing alerts are re-sent to Alertmanager every resend interval (event
// time), which keeps them active there: the real Alertmanager's endsAt for
// the alert moves forward with each resend.
func TestAlertmanagerResendKeepsAlertActive(t *testing.T) {
	am := testenv.StartAlertmanager(t, "route:\n  receiver: devnull\nreceivers:\n  - name: devnull\n")
	w := newWorld(t, []sim.Job{{Name: "on", Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.9, CommFrac: 0.9}},
		[]rules.Rule{{Name: "hall_load", Level: "hall", Domains: []string{"dc1/h1"}, Metric: rules.MetricPowerMW, Power: rules.PowerGPU, Threshold: f(1), Severity: "warning"}})
	w.cfg.Notifiers.Alertmanager.URLs = []string{am.URL}
	w.cfg.Notifiers.Alertmanager.ResendInterval = 3 * time.Second
	w.startEngine()
	endsAt := func() time.Time {
		resp, err := http.Get(am.URL + "/api/v2/alerts?filter=alertname%3D%22hall_load%22")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var as []struct {
			EndsAt time.Time `json:"endsAt"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&as); err != nil || len(as) != 1 {
			return time.Time{}
		}
		return as[0].EndsAt
	}
	w.window(1) // fires (no `for`) and is sent
	waitFor(t, 5*time.Second, "the alert in Alertmanager", func() bool { return !endsAt().IsZero() })
	time.Sleep(300 * time.Millisecond)
	first := endsAt()
	if d := time.Until(first); d < 8*time.Second || d > 13*time.Second {
		t.Errorf("endsAt %s ahead, want 4 resend intervals (12s)", d)
	}
	time.Sleep(1100 * time.Millisecond) // let the wall clock move
	w.window(2)
	w.window(3) // < 3 s of event time since the last send: no resend
	time.Sleep(300 * time.Millisecond)
	if !endsAt().Equal(first) {
		t.Fatalf("re-sent before the resend interval")
	}
	w.window(4) // 3 s after the first send: re-sent
	waitFor(t, 5*time.Second, "the resend", func() bool { return endsAt().After(first) })
}
