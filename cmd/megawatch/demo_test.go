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

	"github.com/megawatch/megawatch/alerts"
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
	// The facility table: the three figures per hall, a metered figure
	// from the hall's switchgear.
	facility := shippedDivergenceRule(t) != ""
	if facility {
		page.WaitText(`tr.fac-row[data-key="demo/h1"] td.fac-meter`, func(s string) bool {
			v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
			return err == nil && v > 0
		}, 30*time.Second)
		cells := page.Texts(`tr.fac-row[data-key="demo/h1"] td`)
		if len(cells) != 8 || cells[6] != "meter" {
			t.Errorf("facility row of hall h1: %q, want GPU, node, metered, unaccounted and source meter", cells)
		}
		for i, c := range cells[1:4] {
			if v, err := strconv.ParseFloat(strings.ReplaceAll(c, ",", ""), 64); err != nil || v <= 0 {
				t.Errorf("facility row of hall h1, figure %d: %q, want MW", i+1, c)
			}
		}
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
	if v, _ := strconv.ParseFloat(m[1], 64); v < 0.95*10 {
		t.Errorf("page says %s MW, want above 95%% of the 10 MW hall", m[1])
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

	// The three figures side by side, per hall: GPU < node < metered (the
	// switchgear sees losses and non-IT load).
	if facility {
		three := regexp.MustCompile(`hall h([12])\s.*GPU\s+([0-9.]+) · node\s+([0-9.]+) · metered\s+([0-9.]+) · unacc\.\s+(-?[0-9.]+) MW \(meter\)`)
		shown := 0
		for _, m := range three.FindAllStringSubmatch(out, -1) {
			gpu, _ := strconv.ParseFloat(m[2], 64)
			node, _ := strconv.ParseFloat(m[3], 64)
			met, _ := strconv.ParseFloat(m[4], 64)
			if gpu > 0 && node > gpu && met > node {
				shown++
			}
		}
		if shown < 10 {
			t.Errorf("%d hall lines with GPU < node < metered figures, want the whole scenario's", shown)
		}
		// The divergence scene: row h2/r01's collectors stop while its
		// meter keeps reading: the alert fires once, then resolves.
		rule := shippedDivergenceRule(t)
		fire, resolve := "FIRING   "+rule+" demo/h2/r01", "RESOLVED "+rule+" demo/h2/r01"
		nf, nr := strings.Count(out, fire), strings.Count(out, resolve)
		if nf < 1 || nr < 1 || strings.Index(out, resolve) < strings.Index(out, fire) {
			t.Errorf("%s for row h2/r01: fired %d times, resolved %d times, want fired, then resolved", rule, nf, nr)
		}
		// On a starved machine (the in-process publisher cannot build the
		// campus's reports within the grace: they count late, coverage
		// drops in rows whose collectors run) the divergence alert is
		// right to fire elsewhere too: reports really are missing. Only a
		// demo that kept up must show exactly the scene.
		if why := demoStarved(out, stderr.String()); why != "" {
			t.Logf("machine too busy for the demo (%s): divergence alerts beyond row h2/r01 are expected, not checked", why)
		} else {
			if nf != 1 || nr != 1 {
				t.Errorf("%s for row h2/r01 fired %d times, resolved %d times, want once each", rule, nf, nr)
			}
			if strings.Contains(out, rule+" demo/h1") || strings.Contains(out, rule+" demo/h2/r02") {
				t.Errorf("%s fired for a row whose collectors kept reporting", rule)
			}
		}
	} else {
		t.Log("the shipped alerts config has no row rule on unaccounted_ratio: facility power (aggregator and rules) is not in this build, so the three figures and the divergence alert are not checked")
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

// shippedDivergenceRule is the name of the shipped row-level rule on
// unaccounted_ratio (the meter/node divergence), "" when there is none.
func shippedDivergenceRule(t *testing.T) string {
	t.Helper()
	for _, r := range alerts.DefaultConfig().Rules {
		if r.Metric == "unaccounted_ratio" && r.Level == "row" {
			return r.Name
		}
	}
	return ""
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

// demoStarved says why a demo run could not keep up with its campus ("" if
// it did): the publisher skipped or thinned windows, or hall h1 (whose
// collectors all run through the scenario) showed less than 95 % coverage.
func demoStarved(stdout, stderr string) string {
	if strings.Contains(stderr, "publisher behind") {
		return "the publisher skipped reports"
	}
	h1 := regexp.MustCompile(`hall h1 .*coverage\s+([0-9.]+)%`)
	for _, m := range h1.FindAllStringSubmatch(stdout, -1) {
		if v, _ := strconv.ParseFloat(m[1], 64); v < 95 {
			return fmt.Sprintf("hall h1 coverage %s%%", m[1])
		}
	}
	return ""
}

func TestDemoStarved(t *testing.T) {
	quiet := "                                       hall h1        2.9 /  10.0 MW [######..............]  29%  GPU   0.7 · node   2.4 · metered   2.9 · unacc.   0.5 MW (meter)  headroom   7.1 MW  coverage 100.0%\n" +
		"                                       hall h2        2.9 /  10.0 MW [######..............]  29%  GPU   0.7 · node   2.4 · metered   2.9 · unacc.   0.5 MW (meter)  headroom   7.1 MW  coverage  75.0%\n"
	if why := demoStarved(quiet, "level=WARN msg=\"NO PAGING NOTIFIER\""); why != "" {
		t.Errorf("quiet run: %q", why)
	}
	busy := strings.Replace(quiet, "coverage 100.0%", "coverage  54.4%", 1)
	if why := demoStarved(busy, ""); why == "" {
		t.Error("h1 at 54.4 % coverage: not starved")
	}
	if why := demoStarved(quiet, `level=WARN msg="publisher behind: windows skipped" windows=1`); why == "" {
		t.Error("skipped windows: not starved")
	}
}
