package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/browsertest"
	"github.com/megawatch/megawatch/internal/testenv"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestDemoEndToEnd runs `megawatch demo --quick` on a smaller campus against
// a real influxd, watches the live page in headless Chromium while hall h1
// is above 95% of its capacity, and then checks what the operator saw:
// the page, its resolve, non-zero hall power in the terminal, and the
// rollups and alert events in InfluxDB.
func TestDemoEndToEnd(t *testing.T) {
	testenv.Short(t)
	influx := testenv.StartInfluxd(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	var stdout, stderr lockedBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"--quick", "--scale", "0.2", "--collectors", "2", "--http-addr", addr,
			"--influx-url", influx.URL, "--log-level", "warn"}, &stdout, &stderr)
	}()
	defer func() {
		if t.Failed() {
			t.Logf("demo stdout:\n%s\ndemo stderr (tail):\n%s", stdout.String(), tail(stderr.String(), 4000))
		}
	}()
	if err := testenv.WaitHTTP("http://"+addr+"/healthz", http.StatusOK, 60*time.Second); err != nil {
		t.Fatalf("live page not up: %v", err)
	}

	// The live page in a real browser, during the burst: non-zero MW and
	// the active capacity page.
	page := browsertest.Open(t, "http://"+addr+"/")
	page.WaitText("#site-mw", func(s string) bool {
		v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
		return err == nil && v > 0
	}, 30*time.Second)
	deadline := time.Now().Add(90 * time.Second)
	var rows []string
	for time.Now().Before(deadline) {
		rows = page.Texts(".alert-row")
		if firingRow(rows, "hall_power_critical") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !firingRow(rows, "hall_power_critical") {
		t.Fatalf("no firing hall_power_critical alert on the live page; rows: %q", rows)
	}
	shot := page.Screenshot(filepath.Join(t.TempDir(), "demo-live-page.png"))
	t.Logf("screenshot of the live page during the page: %s", shot)
	if dir := os.Getenv("MEGAWATCH_SCREENSHOT_DIR"); dir != "" {
		if b, err := os.ReadFile(shot); err == nil {
			_ = os.WriteFile(filepath.Join(dir, "demo-live-page.png"), b, 0o644)
		}
	}

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("demo did not finish its scenario")
	}
	out := stdout.String()

	// The terminal: hall power lines with non-zero MW, the page and its resolve.
	hallLine := regexp.MustCompile(`hall h1\s+([0-9.]+) /\s+([0-9.]+) MW`)
	nonZero := 0
	for _, m := range hallLine.FindAllStringSubmatch(out, -1) {
		if v, _ := strconv.ParseFloat(m[1], 64); v > 0 {
			nonZero++
		}
	}
	if nonZero < 10 {
		t.Errorf("%d hall h1 lines with non-zero MW, want the whole scenario's", nonZero)
	}
	firing := regexp.MustCompile(`CRITICAL\s+FIRING\s+hall_power_critical demo/h1: hall demo/h1 draws ([0-9.]+) MW, [0-9.]+% of its [0-9.]+ MW capacity \(threshold ([0-9.]+) MW\)`)
	m := firing.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no page for hall h1 above 95%% in the output")
	}
	if v, _ := strconv.ParseFloat(m[1], 64); v < 0.95*5 {
		t.Errorf("page says %s MW, want above 95%% of the 5 MW hall", m[1])
	}
	if n := strings.Count(out, "FIRING   hall_power_critical demo/h1"); n != 1 {
		t.Errorf("hall_power_critical paged %d times, want once", n)
	}
	if n := strings.Count(out, "RESOLVED hall_power_critical demo/h1"); n != 1 {
		t.Errorf("hall_power_critical resolved %d times, want once", n)
	}
	if strings.Index(out, "RESOLVED hall_power_critical") < strings.Index(out, "FIRING   hall_power_critical") {
		t.Error("resolve printed before the page")
	}
	if !strings.Contains(out, "demo done:") {
		t.Error("no summary line")
	}

	// InfluxDB: the rollups at full resolution and the alert events.
	if n := influx.Count(t, "megawatch", `SELECT count(power_mw) FROM rollup_1y.rollup WHERE level='hall' AND hall='h1'`); n < 30 {
		t.Errorf("%d hall h1 rollups in InfluxDB, want one per second of the scenario", n)
	}
	series := influx.Query(t, "megawatch", `SELECT state, value FROM rollup_1y.alert WHERE rule='hall_power_critical' AND domain='demo/h1'`)
	var states []string
	if len(series) > 0 {
		for _, row := range series[0].Values {
			states = append(states, fmt.Sprint(row[1]))
		}
	}
	if !contains(states, "firing") || !contains(states, "resolved") {
		t.Errorf("alert events in InfluxDB for hall_power_critical: %v, want firing and resolved", states)
	}
	if n := influx.Count(t, "megawatch", `SELECT count(power_w) FROM node_30d.node`); n == 0 {
		t.Error("no node points in InfluxDB")
	}
}

// firingRow reports whether an alert row names rule and is not pending.
func firingRow(rows []string, rule string) bool {
	for _, r := range rows {
		if strings.Contains(r, rule) && !strings.Contains(strings.ToUpper(r), "PENDING") {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
