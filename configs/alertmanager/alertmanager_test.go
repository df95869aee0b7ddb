// Package alertmanager_test runs the real Alertmanager with the example
// config and checks that a megawatch page reaches PagerDuty (an httptest
// server stands in for events.pagerduty.com) with the routing key from
// its file, and that a warning does not page.
package alertmanager_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
)

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

func TestPagesRouteToPagerDuty(t *testing.T) {
	testenv.Short(t)
	var mu sync.Mutex
	var events []pdEvent
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev pdEvent
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Errorf("PagerDuty got %s: %v", b, err)
		}
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"status":"success","dedup_key":"x"}`))
	}))
	defer pd.Close()

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
		"https://events.pagerduty.com/v2/enqueue":         pd.URL + "/v2/enqueue",
		"/etc/alertmanager/secrets/pagerduty-routing-key": keyFile,
		"group_wait: 10s": "group_wait: 100ms",
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("alertmanager.yml no longer contains %q: update the test", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	am := testenv.StartAlertmanager(t, conf)

	// What megawatch's Alertmanager notifier posts: a critical hall page
	// and a warning on the other hall.
	now := time.Now().UTC()
	alerts := []map[string]any{{
		"labels": map[string]string{"alertname": "hall_power_critical", "severity": "critical", "level": "hall",
			"domain": "dc1/h1", "site": "dc1", "hall": "h1", "team": "facility"},
		"annotations": map[string]string{"summary": "hall dc1/h1 draws 24.0 MW, above 23.8 MW (96% of its 25.0 MW capacity)"},
		"startsAt":    now.Format(time.RFC3339),
	}, {
		"labels": map[string]string{"alertname": "hall_power_high", "severity": "warning", "level": "hall",
			"domain": "dc1/h2", "site": "dc1", "hall": "h2", "team": "facility"},
		"annotations": map[string]string{"summary": "hall dc1/h2 draws 22.6 MW"},
		"startsAt":    now.Format(time.RFC3339),
	}}
	body, _ := json.Marshal(alerts)
	resp, err := http.Post(am.URL+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post alerts: %d", resp.StatusCode)
	}

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(events)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PagerDuty got nothing:\n%s", am.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a warning page, if routed wrongly, would arrive with it
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 {
		t.Fatalf("PagerDuty got %d events, want only the critical page: %+v", len(events), events)
	}
	ev := events[0]
	if ev.RoutingKey != "test-routing-key" || ev.EventAction != "trigger" || ev.DedupKey == "" {
		t.Errorf("event %+v: want routing key from the file, trigger, a dedup key", ev)
	}
	if ev.Payload.Severity != "critical" || ev.Payload.Component != "hall" || ev.Payload.Group != "dc1" ||
		!strings.Contains(ev.Payload.Summary, "dc1/h1") {
		t.Errorf("payload %+v", ev.Payload)
	}
}
