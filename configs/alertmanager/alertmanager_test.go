// Package alertmanager_test checks the example Alertmanager config with the
// real Alertmanager 0.25 (Debian's prometheus-alertmanager) and its amtool:
// a critical page reaches PagerDuty (an httptest server stands in for
// events.pagerduty.com) with the routing key from its file AND the chat
// channel; a warning reaches chat only; the coverage warning is never
// inhibited by the power page it qualifies, while the power warning is.
package alertmanager_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
)

// amtool's route test, as docs/operations.md tells the operator to run it.
func TestRoutesWithAmtool(t *testing.T) {
	amtool := testenv.Binary(t, "amtool")
	for _, c := range []struct {
		labels []string
		want   string
	}{
		{[]string{"alertname=hall_power_critical", "severity=critical", "level=hall", "domain=dc1/h1", "team=facility"}, "pagerduty-facility,facility-chat"},
		{[]string{"alertname=site_ramp", "severity=critical", "level=site", "domain=dc1"}, "pagerduty-facility,facility-chat"},
		{[]string{"alertname=hall_power_high", "severity=warning", "level=hall", "domain=dc1/h1"}, "facility-chat"},
		{[]string{"alertname=hall_coverage_low", "severity=warning", "level=hall", "domain=dc1/h1", "team=telemetry"}, "facility-chat"},
	} {
		args := append([]string{"config", "routes", "test", "--config.file=alertmanager.yml", "--verify.receivers=" + c.want}, c.labels...)
		out, err := exec.Command(amtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("amtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, err := exec.Command(amtool, "check-config", "alertmanager.yml").CombinedOutput()
	if err != nil {
		t.Errorf("amtool check-config: %v\n%s", err, out)
	}
}

type pdEvent struct {
	RoutingKey  string `json:"routing_key"`
	EventAction string `json:"event_action"`
	DedupKey    string `json:"dedup_key"`
	Payload     struct {
		Summary   string `json:"summary"`
		Severity  string `json:"severity"`
		Component string `json:"component"`
		Group     string `json:"group"`
	} `json:"payload"`
}

type webhookMsg struct {
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	Alerts   []struct {
		Labels map[string]string `json:"labels"`
	} `json:"alerts"`
}

type recorder[T any] struct {
	mu  sync.Mutex
	got []T
}

func (r *recorder[T]) server(t *testing.T, reply string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var v T
		b, _ := io.ReadAll(req.Body)
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("%s got %s: %v", req.URL.Path, b, err)
		}
		r.mu.Lock()
		r.got = append(r.got, v)
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(reply))
	}))
	t.Cleanup(s.Close)
	return s
}

func (r *recorder[T]) all() []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

// The real Alertmanager with the example config: what reaches PagerDuty
// and chat, and what the v2 API reports as inhibited.
func TestPagesRouteToPagerDutyAndChat(t *testing.T) {
	testenv.Short(t)
	var pd recorder[pdEvent]
	var chat recorder[webhookMsg]
	pdSrv := pd.server(t, `{"status":"success","dedup_key":"x"}`)
	chatSrv := chat.server(t, "")

	src, err := os.ReadFile("alertmanager.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "pagerduty-routing-key")
	if err := os.WriteFile(keyFile, []byte("test-routing-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for old, repl := range map[string]string{
		"https://events.pagerduty.com/v2/enqueue":                       pdSrv.URL + "/v2/enqueue",
		"/etc/alertmanager/secrets/pagerduty-routing-key":               keyFile,
		"http://alertmanager-chat-bridge.monitoring.svc:8080/megawatch": chatSrv.URL + "/megawatch",
		// Long enough for Alertmanager's inhibitor to have taken in the page
		// before the warnings' groups flush, on a loaded machine too (at
		// 100 ms the inhibited warning reached chat once under load).
		"group_wait: 10s": "group_wait: 2s",
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("alertmanager.yml no longer contains %q: update the test", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	am := testenv.StartAlertmanager(t, conf)

	// What megawatch's Alertmanager notifier posts: a critical hall page,
	// the power warning and the coverage warning of the same hall, and a
	// warning on another hall.
	now := time.Now().UTC().Format(time.RFC3339)
	alert := func(name, sev, domain, team, summary string) map[string]any {
		site, hall, _ := strings.Cut(domain, "/")
		return map[string]any{
			"labels": map[string]string{"alertname": name, "severity": sev, "level": "hall",
				"domain": domain, "site": site, "hall": hall, "team": team},
			"annotations": map[string]string{"summary": summary},
			"startsAt":    now,
		}
	}
	post := func(alerts ...map[string]any) {
		t.Helper()
		body, _ := json.Marshal(alerts)
		resp, err := http.Post(am.URL+"/api/v2/alerts", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("post alerts: %d", resp.StatusCode)
		}
	}
	// The page first (megawatch's critical rule fires with or before the
	// warning it silences), then the warnings once Alertmanager holds it.
	post(alert("hall_power_critical", "critical", "dc1/h1", "facility", "hall dc1/h1 draws 24.0 MW, 96% of its 25.0 MW capacity"))
	holds := func() bool {
		resp, err := http.Get(am.URL + "/api/v2/alerts?filter=alertname%3D%22hall_power_critical%22")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var as []json.RawMessage
		return json.NewDecoder(resp.Body).Decode(&as) == nil && len(as) == 1
	}
	for deadline := time.Now().Add(30 * time.Second); !holds(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Alertmanager does not hold the page after 30 s:\n%s", am.Output())
		}
	}
	post(alert("hall_power_high", "warning", "dc1/h1", "facility", "hall dc1/h1 draws 24.0 MW"),
		alert("hall_coverage_low", "warning", "dc1/h1", "telemetry", "hall dc1/h1: 95% of nodes report"),
		alert("hall_power_high", "warning", "dc1/h2", "facility", "hall dc1/h2 draws 22.6 MW"))

	// Chat gets three notifications (one group each: the page, the
	// coverage warning, the other hall's warning); the inhibited power
	// warning of dc1/h1 never comes.
	chatAlerts := func() map[string]bool {
		seen := map[string]bool{}
		for _, m := range chat.all() {
			for _, a := range m.Alerts {
				seen[a.Labels["alertname"]+" "+a.Labels["domain"]] = true
			}
		}
		return seen
	}
	wantChat := []string{"hall_power_critical dc1/h1", "hall_coverage_low dc1/h1", "hall_power_high dc1/h2"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := chatAlerts()
		ok := len(pd.all()) > 0
		for _, w := range wantChat {
			ok = ok && seen[w]
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: PagerDuty %+v, chat %v, want the page in both and %v in chat:\n%s", pd.all(), seen, wantChat, am.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The v2 API: the power warning of dc1/h1 is suppressed (inhibited by
	// the page), the coverage warning is active.
	var got []struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State       string   `json:"state"`
			InhibitedBy []string `json:"inhibitedBy"`
		} `json:"status"`
	}
	resp, err := http.Get(am.URL + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	state := map[string]string{}
	for _, a := range got {
		state[a.Labels["alertname"]+" "+a.Labels["domain"]] = a.Status.State
	}
	for k, want := range map[string]string{
		"hall_power_critical dc1/h1": "active", "hall_coverage_low dc1/h1": "active",
		"hall_power_high dc1/h1": "suppressed", "hall_power_high dc1/h2": "active",
	} {
		if state[k] != want {
			t.Errorf("%s: state %q, want %q (all: %v)", k, state[k], want, state)
		}
	}

	if seen := chatAlerts(); seen["hall_power_high dc1/h1"] {
		t.Errorf("the inhibited power warning reached chat: %v", seen)
	}
	evs := pd.all()
	if len(evs) != 1 {
		t.Fatalf("PagerDuty got %d events, want only the critical page: %+v", len(evs), evs)
	}
	ev := evs[0]
	if ev.RoutingKey != "test-routing-key" || ev.EventAction != "trigger" || ev.DedupKey == "" {
		t.Errorf("event %+v: want routing key from the file, trigger, a dedup key", ev)
	}
	if ev.Payload.Severity != "critical" || ev.Payload.Component != "hall" || ev.Payload.Group != "dc1" ||
		!strings.Contains(ev.Payload.Summary, "dc1/h1") {
		t.Errorf("payload %+v", ev.Payload)
	}
}
