package pagerduty

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
)

func testAlert(state string) notify.Alert {
	t0 := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	return notify.Alert{Rule: "hall_power_critical", Severity: "critical", Level: "hall", Domain: "dc1/h1", Path: []string{"dc1", "h1"},
		State: state, Metric: "power_mw", Unit: "MW", Value: 19.6, Threshold: 19, Labels: map[string]string{"team": "facility"},
		Annotations: map[string]string{"summary": "hall dc1/h1 draws 19.60 MW, above 19.00 MW"}, StartsAt: t0, At: t0.Add(5 * time.Second),
		Fingerprint: "abc"}
}

// PagerDuty cannot be reached from tests: an httptest server stands in and
// every field of the Events v2 body is checked.
func TestTriggerAndResolveFieldByField(t *testing.T) {
	var mu sync.Mutex
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s", r.Method, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"status":"success","dedup_key":"x"}`)
	}))
	defer srv.Close()
	key := t.TempDir() + "/key"
	if err := writeFile(key, "R0UTING\n"); err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{RoutingKeyFile: key, URL: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Notify(context.Background(), []notify.Alert{testAlert("firing"), testAlert("resolved")}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d events", len(got))
	}
	tr, rs := got[0], got[1]
	f := func(m map[string]any, k string, want any) {
		t.Helper()
		if m[k] != want {
			t.Errorf("%s = %#v, want %#v", k, m[k], want)
		}
	}
	f(tr, "routing_key", "R0UTING")
	f(tr, "event_action", "trigger")
	f(tr, "dedup_key", "megawatch/hall_power_critical/dc1/h1")
	f(tr, "client", "megawatch")
	p := tr["payload"].(map[string]any)
	f(p, "summary", "hall dc1/h1 draws 19.60 MW, above 19.00 MW")
	f(p, "source", "dc1/h1")
	f(p, "severity", "critical")
	f(p, "timestamp", "2026-11-27T01:00:00Z")
	f(p, "component", "hall")
	f(p, "group", "dc1/h1")
	f(p, "class", "power_mw")
	cd := p["custom_details"].(map[string]any)
	f(cd, "value", 19.6)
	f(cd, "threshold", 19.0)
	f(cd, "unit", "MW")
	f(cd, "rule", "hall_power_critical")
	f(rs, "routing_key", "R0UTING")
	f(rs, "event_action", "resolve")
	f(rs, "dedup_key", "megawatch/hall_power_critical/dc1/h1")
	if _, ok := rs["payload"]; ok {
		t.Error("resolve carries a payload")
	}
}

// 429 is retried after Retry-After (the dispatcher's backoff), 400 is not.
func TestThrottledThenAccepted(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		c := calls
		mu.Unlock()
		switch c {
		case 1, 2:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	t.Setenv("PD_KEY", "k")
	n, err := New(Config{RoutingKeyEnv: "PD_KEY", URL: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	retry, err := n.Notify(context.Background(), []notify.Alert{testAlert("firing")})
	if !retry || err == nil {
		t.Fatalf("429: retry %v err %v", retry, err)
	}
	d := notify.NewDispatcher(notify.DispatcherConfig{QueueSize: 10, Timeout: time.Second, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 5}, []notify.Notifier{n}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	d.Send([]notify.Alert{testAlert("firing")})
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		c := calls
		mu.Unlock()
		if c >= 3 && d.Pending() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls %d", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done

	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) }))
	defer bad.Close()
	n2, _ := New(Config{RoutingKeyEnv: "PD_KEY", URL: bad.URL}, nil)
	if retry, err := n2.Notify(context.Background(), []notify.Alert{testAlert("firing")}); retry || err == nil {
		t.Fatalf("400: retry %v err %v", retry, err)
	}
}

func TestRoutingKeyRequired(t *testing.T) {
	if _, err := New(Config{RoutingKeyEnv: "MEGAWATCH_UNSET_PD_KEY", URL: DefaultURL}, nil); err == nil {
		t.Fatal("missing key accepted")
	}
}
