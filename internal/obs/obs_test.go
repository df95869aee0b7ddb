package obs

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

// /healthz follows the main loop's heartbeat: 200 while it beats, 503
// once it stalled; /readyz prints the detail line.
func TestHealthzIsTheMainLoopsLiveness(t *testing.T) {
	now := time.Unix(1000, 0)
	hb := NewHeartbeat(10 * time.Second)
	hb.now = func() time.Time { return now }
	hb.Beat()
	h := Handler(Options{Registry: prometheus.NewRegistry(), Live: hb, Detail: func() string { return "paging: x" }})
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("fresh heartbeat: %d", code)
	}
	now = now.Add(11 * time.Second)
	if code, body := get(t, h, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "stalled") {
		t.Fatalf("stalled loop: %d %q", code, body)
	}
	hb.Beat()
	if code, _ := get(t, h, "/healthz"); code != http.StatusOK {
		t.Fatalf("after a beat: %d", code)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || body != "ready\npaging: x\n" {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, _ := get(t, Mux(prometheus.NewRegistry(), nil), "/healthz"); code != http.StatusOK {
		t.Fatalf("no heartbeat: %d", code)
	}
}
