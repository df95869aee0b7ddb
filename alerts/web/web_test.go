package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/web"
)

func serve(t *testing.T, src web.Source, interval time.Duration) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(web.Handler(src, nil, interval))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestPageHasNoExternalAssets(t *testing.T) {
	srv := serve(t, newFakeSource(), time.Second)
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`id="site-mw"`, `id="alerts"`, `id="chart"`, "Grafana or InfluxDB is down", `src="static/app.js"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	for _, asset := range []string{"/static/app.js", "/static/app.css"} {
		resp, b := get(t, srv.URL+asset)
		if resp.StatusCode != http.StatusOK || len(b) < 100 {
			t.Errorf("GET %s = %d, %d bytes", asset, resp.StatusCode, len(b))
		}
		body += b
	}
	for _, bad := range []string{"http://", "https://", "//cdn", "@import"} {
		if strings.Contains(body, bad) && !strings.Contains(body, "http://www.w3.org/2000/svg") {
			t.Errorf("page or assets reference %q: external assets are not allowed", bad)
		}
	}
	if resp, _ := get(t, srv.URL+"/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", resp.StatusCode)
	}
}

func TestAPISnapshot(t *testing.T) {
	srv := serve(t, newFakeSource(), time.Second)
	resp, body := get(t, srv.URL+"/api/snapshot")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/snapshot = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var raw map[string]any
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"at", "window_ms", "sites", "halls", "site_series", "alerts"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("snapshot JSON lacks %q", k)
		}
	}
	site := raw["sites"].([]any)[0].(map[string]any)
	for _, k := range []string{"power_mw", "power_est_mw", "capacity_mw", "headroom_mw", "nodes_reporting", "nodes_expected",
		"coverage", "ramp_mw_per_s", "swing_mw", "osc_freq_hz", "osc_mw", "gpu_temp_max_c", "throttled_gpus"} {
		if _, ok := site[k]; !ok {
			t.Errorf("site JSON lacks %q", k)
		}
	}
	var s web.Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if s.Sites[0].PowerMW != 41.2 || len(s.SiteSeries["dc1"]) != 600 || s.Alerts[0].Rule != "hall_capacity" {
		t.Errorf("snapshot round trip: %+v", s.Sites[0])
	}
}

type nanSource struct{}

func (nanSource) Snapshot() web.Snapshot {
	return web.Snapshot{
		Sites:      []web.DomainView{{Key: "dc1", PowerMW: math.NaN(), Coverage: math.Inf(1)}},
		SiteSeries: map[string][]web.Point{"dc1": {{T: 1, MW: math.NaN()}, {T: 2, MW: 3}}},
		Alerts:     []web.AlertView{{Rule: "r", Value: math.Inf(-1)}},
	}
}

// JSON has no NaN or Inf: they are sent as 0 rather than failing the stream.
func TestNonFiniteValues(t *testing.T) {
	srv := serve(t, nanSource{}, time.Second)
	resp, body := get(t, srv.URL+"/api/snapshot")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var s web.Snapshot
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if s.Sites[0].PowerMW != 0 || s.Sites[0].Coverage != 0 || s.SiteSeries["dc1"][0].MW != 0 || s.SiteSeries["dc1"][1].MW != 3 || s.Alerts[0].Value != 0 {
		t.Errorf("non-finite values not zeroed: %+v", s)
	}
}

// readEvents reads n "snapshot" events from an SSE stream.
func readEvents(t *testing.T, r io.Reader, n int) []web.Snapshot {
	t.Helper()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	var out []web.Snapshot
	event := ""
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if event != "snapshot" {
				t.Fatalf("data for event %q", event)
			}
			var s web.Snapshot
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &s); err != nil {
				t.Fatalf("event data: %v", err)
			}
			out = append(out, s)
		}
	}
	if len(out) < n {
		t.Fatalf("got %d events, want %d (scan err %v)", len(out), n, sc.Err())
	}
	return out
}

func TestEvents(t *testing.T) {
	src := newFakeSource()
	srv := serve(t, src, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	evs := readEvents(t, resp.Body, 4)
	for _, s := range evs {
		if len(s.Sites) != 1 || s.Sites[0].PowerMW != 41.2 || len(s.Alerts) != 2 {
			t.Fatalf("event snapshot: %+v", s.Sites)
		}
	}
}

// Clients that leave must not leave goroutines behind: neither their own
// handler goroutines nor the poller, which runs only while someone listens.
func TestEventsNoGoroutineLeak(t *testing.T) {
	src := newFakeSource()
	srv := serve(t, src, 10*time.Millisecond)
	before := runtime.NumGoroutine()
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		var bodies []io.Closer
		for range 5 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readEvents(t, resp.Body, 2)
			bodies = append(bodies, resp.Body)
		}
		cancel()
		for _, b := range bodies {
			b.Close()
		}
	}
	http.DefaultClient.CloseIdleConnections()
	srv.CloseClientConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after the clients left, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	// The poller stopped: the source is not called any more.
	calls := src.calls.Load()
	time.Sleep(100 * time.Millisecond)
	if got := src.calls.Load(); got != calls {
		t.Errorf("source called %d more times with no client connected", got-calls)
	}
}

// A client that stops reading must neither block the source nor the other
// clients: they keep getting fresh snapshots.
func TestSlowClientDoesNotBlock(t *testing.T) {
	src := newFakeSource()
	srv := serve(t, src, 5*time.Millisecond)

	// The slow client: a raw connection that never reads after the request.
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	if _, err := io.WriteString(conn, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}

	// Enough snapshots (~60 kB each) to fill the slow client's socket buffers.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	evs := readEvents(t, resp.Body, 200)
	// Snapshot times are truncated to 100 ms; 200 events at 5 ms span ≥ 1 s.
	if !evs[len(evs)-1].At.After(evs[0].At) {
		t.Errorf("fast client got stale snapshots: first %v last %v", evs[0].At, evs[len(evs)-1].At)
	}
}

type emptySource struct{}

func (emptySource) Snapshot() web.Snapshot { return web.Snapshot{WindowMs: 1000} }
