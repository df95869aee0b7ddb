package webhook

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
)

func TestSignedPayloadFieldByField(t *testing.T) {
	var body []byte
	var sig string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		sig = r.Header.Get(SignatureHeader)
	}))
	defer srv.Close()
	t.Setenv("HOOK_SECRET", "s3cret")
	n, err := New(Config{URL: srv.URL, SecretEnv: "HOOK_SECRET"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	a := notify.Alert{Rule: "site_oscillation", Severity: "critical", Level: "site", Domain: "dc1", Path: []string{"dc1"}, State: "resolved",
		Metric: "oscillation_mw", Unit: "MW", Value: 5.5, Threshold: 10, Labels: map[string]string{"team": "facility"},
		Annotations: map[string]string{"summary": "dc1 oscillates"}, StartsAt: t0, EndsAt: t0.Add(time.Minute), At: t0.Add(time.Minute), Fingerprint: "f1"}
	if _, err := n.Notify(context.Background(), []notify.Alert{a}); err != nil {
		t.Fatal(err)
	}
	if want := Sign([]byte("s3cret"), body); sig != want || len(sig) != len("sha256=")+64 {
		t.Fatalf("signature %q, want %q", sig, want)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m["version"] != "1" || m["source"] != "megawatch" {
		t.Errorf("envelope %v", m)
	}
	got := m["alerts"].([]any)[0].(map[string]any)
	for k, want := range map[string]any{"rule": "site_oscillation", "severity": "critical", "level": "site", "domain": "dc1", "state": "resolved",
		"metric": "oscillation_mw", "unit": "MW", "value": 5.5, "threshold": 10.0, "starts_at": "2026-11-27T01:00:00Z",
		"ends_at": "2026-11-27T01:01:00Z", "at": "2026-11-27T01:01:00Z", "fingerprint": "f1"} {
		if got[k] != want {
			t.Errorf("%s = %#v, want %#v", k, got[k], want)
		}
	}
	if got["labels"].(map[string]any)["team"] != "facility" || got["annotations"].(map[string]any)["summary"] != "dc1 oscillates" {
		t.Errorf("labels/annotations %v", got)
	}
}

func TestUnsignedAndErrors(t *testing.T) {
	codes := []int{http.StatusServiceUnavailable, http.StatusNotFound}
	for _, code := range codes {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(SignatureHeader) != "" {
				t.Error("signed without a secret")
			}
			w.WriteHeader(code)
		}))
		n, _ := New(Config{URL: srv.URL}, nil)
		retry, err := n.Notify(context.Background(), []notify.Alert{{Rule: "r", State: "firing"}})
		if err == nil || retry != (code >= 500) {
			t.Errorf("HTTP %d: retry %v err %v", code, retry, err)
		}
		srv.Close()
	}
}
