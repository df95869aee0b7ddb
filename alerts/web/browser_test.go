package web_test

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/web"
	"github.com/megawatch/megawatch/internal/browsertest"
	"github.com/megawatch/megawatch/internal/testenv"
)

// TestLivePageInChromium loads the page in headless Chromium: it must show
// non-zero campus MW, the halls, the chart and the active alerts, update
// over SSE, and throw no script errors. The screenshot is kept under the
// test's temp dir (MEGAWATCH_SCREENSHOT_DIR keeps a copy elsewhere).
func TestLivePageInChromium(t *testing.T) {
	testenv.Short(t)
	src := newFakeSource()
	srv := httptest.NewServer(web.Handler(src, slog.New(slog.DiscardHandler), 200*time.Millisecond))
	t.Cleanup(srv.Close) // after the browser's cleanup, which closes the SSE stream

	p := browsertest.Open(t, srv.URL+"/")
	mw := p.WaitText("#site-mw", func(s string) bool {
		v, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
		return err == nil && v > 0
	}, 20*time.Second)
	if mw != "49.8" {
		t.Errorf("#site-mw = %q, want the facility figure 49.8", mw)
	}
	if got := p.Text("#site-basis"); got != "node sum · GPU 41.7 MW" {
		t.Errorf("#site-basis = %q, want where the figure comes from and the GPU figure", got)
	}
	if p.Count("#site-degraded.hidden") != 1 {
		t.Errorf("degraded marker shown for a healthy site: %q", p.Text("#site-degraded"))
	}
	if got := p.Text("#site-capacity"); got != "55.0" {
		t.Errorf("#site-capacity = %q", got)
	}
	if got := p.Text("#site-headroom"); got != "5.2" {
		t.Errorf("#site-headroom = %q, want capacity − facility 5.2", got)
	}
	// The facility table: GPU, node and metered power side by side per
	// domain, unaccounted power and where the figure comes from.
	facCols := func(key string) []string {
		return p.Texts(`tr.fac-row[data-key="` + key + `"] td`)
	}
	p.WaitCount("tr.fac-row", 3, 10*time.Second)
	if got, want := facCols("dc1/h1"), []string{"h1", "23.9", "28.6", "30.1", "1.50", "5.0%", "meter", "30.1"}; !slices.Equal(got, want) {
		t.Errorf("facility row of dc1/h1: %q, want %q", got, want)
	}
	if got, want := facCols("dc1/h2"), []string{"h2", "17.3", "21.2", "stale", "—", "—", "node sum", "21.2"}; !slices.Equal(got, want) {
		t.Errorf("facility row of dc1/h2 (its meter stale): %q, want %q", got, want)
	}
	if got, want := facCols("dc1"), []string{"dc1", "41.7", "49.8", "—", "—", "—", "node sum", "49.8"}; !slices.Equal(got, want) {
		t.Errorf("facility row of dc1: %q, want %q", got, want)
	}
	if got := p.Texts("table.facility th"); len(got) != 8 || got[1] != "GPU MW" || got[2] != "Node MW" || got[3] != "Metered MW" || got[4] != "Unaccounted MW" || got[6] != "Source" {
		t.Errorf("facility columns %q", got)
	}
	// The capacity bars show the facility figure.
	if got := p.Text(`tr.hall-row[data-key="dc1/h1"] .cap-text`); got != "30.1 / 31.5 MW" {
		t.Errorf("hall h1 against capacity: %q, want the metered 30.1 / 31.5 MW", got)
	}
	if got := p.Text("#osc-freq"); got != "0.50" {
		t.Errorf("#osc-freq = %q", got)
	}
	p.WaitCount(".alert-row", 2, 10*time.Second)
	rows := p.Texts(".alert-row")
	if !strings.Contains(rows[0], "hall_capacity") || !strings.Contains(rows[0], "dc1/h1") || !strings.Contains(rows[0], "critical") {
		t.Errorf("first alert row %q, want the critical hall_capacity alert on dc1/h1", rows[0])
	}
	if got := p.Count(".hall-row"); got != 2 {
		t.Errorf("%d hall rows, want 2", got)
	}
	if got := p.Count("#chart path.series"); got != 1 {
		t.Errorf("%d chart series, want 1", got)
	}
	if got := p.Text("#conn"); got != "live" {
		t.Errorf("#conn = %q, want live", got)
	}
	// Live: the update time moves with the snapshots pushed over SSE.
	first := p.Text("#updated")
	p.WaitText("#updated", func(s string) bool { return s != first }, 10*time.Second)
	if !strings.Contains(p.Text("footer"), "Grafana or InfluxDB is down") {
		t.Error("footer does not say the page is the fallback view")
	}

	// Layout: nothing overflows a 1440 px wide control-room screen.
	if over, err := browsertest.Eval[bool](p, `document.documentElement.scrollWidth > window.innerWidth`); err != nil || over {
		t.Errorf("page wider than the window (err %v)", err)
	}
	// At 1400 px the alerts table's last column (Since) stays inside its panel.
	fits, err := browsertest.Eval[bool](p, `(() => {
		document.body.style.width = "1400px";
		const panel = document.querySelector("table.alerts").closest(".panel").getBoundingClientRect();
		const ths = [...document.querySelectorAll("table.alerts th")];
		const cells = [...document.querySelectorAll("table.alerts td")];
		const ok = ths.every((e) => e.getBoundingClientRect().right <= panel.right + 0.5) &&
			cells.every((e) => e.getBoundingClientRect().right <= panel.right + 0.5) &&
			[...document.querySelectorAll("table.alerts .sev")].every((e) => e.getBoundingClientRect().height < 24 &&
				e.getBoundingClientRect().right <= e.closest("td").getBoundingClientRect().right + 0.5) &&
			document.querySelector("table.alerts").closest(".panel").scrollWidth <= document.querySelector("table.alerts").closest(".panel").clientWidth;
		document.body.style.width = "";
		return ok;
	})()`)
	if err != nil || !fits {
		t.Errorf("alerts table columns do not fit their panel at 1400 px (err %v)", err)
	}
	// At 1400 px every table's cells stay inside their panels.
	fits, err = browsertest.Eval[bool](p, `(() => {
		document.body.style.width = "1400px";
		const ok = [...document.querySelectorAll("table")].every((tb) => {
			const panel = tb.closest(".panel");
			const r = panel.getBoundingClientRect();
			return [...tb.querySelectorAll("th, td")].every((e) => e.getBoundingClientRect().right <= r.right + 0.5) &&
				panel.scrollWidth <= panel.clientWidth;
		});
		document.body.style.width = "";
		return ok;
	})()`)
	if err != nil || !fits {
		t.Errorf("a table does not fit its panel at 1400 px (err %v)", err)
	}

	shot := p.Screenshot(filepath.Join(t.TempDir(), "live-page.png"))
	t.Logf("screenshot: %s", shot)
	if dir := os.Getenv("MEGAWATCH_SCREENSHOT_DIR"); dir != "" {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, "live-page.png"), b, 0o644)
		}
		if err != nil {
			t.Errorf("copy screenshot: %v", err)
		}
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page script errors: %q", errs)
	}
}

// Before the first window the page says it is waiting, not "0 MW".
func TestLivePageWaitsForFirstWindow(t *testing.T) {
	testenv.Short(t)
	srv := httptest.NewServer(web.Handler(emptySource{}, nil, 200*time.Millisecond))
	t.Cleanup(srv.Close)
	p := browsertest.Open(t, srv.URL+"/")
	p.WaitText("#conn", func(s string) bool { return strings.Contains(s, "waiting") }, 20*time.Second)
	if got := p.Text("#site-mw"); got != "—" {
		t.Errorf("#site-mw = %q before any data, want —", got)
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page script errors: %q", errs)
	}
}

// hallSource is a hall-scoped alerts instance: halls, no site.
type hallSource struct{ f *fakeSource }

func (h hallSource) Snapshot() web.Snapshot {
	s := h.f.Snapshot()
	s.Sites, s.SiteSeries = nil, nil
	return s
}

// A hall aggregator's page sums its halls instead of waiting for a site.
func TestLivePageHallScoped(t *testing.T) {
	testenv.Short(t)
	srv := httptest.NewServer(web.Handler(hallSource{newFakeSource()}, nil, 200*time.Millisecond))
	t.Cleanup(srv.Close)
	p := browsertest.Open(t, srv.URL+"/")
	if got := p.WaitText("#site-mw", func(s string) bool { return s != "—" }, 20*time.Second); got != "51.3" {
		t.Errorf("#site-mw = %q, want the halls' facility figures' sum 51.3", got)
	}
	if got := p.Count(".hall-row"); got != 2 {
		t.Errorf("%d hall rows, want 2", got)
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page script errors: %q", errs)
	}
}

// A degraded site: the headline carries the estimate and a visible
// "telemetry degraded" marker, never a bare number.
func TestLivePageDegraded(t *testing.T) {
	testenv.Short(t)
	src := newFakeSource()
	src.degraded = true
	srv := httptest.NewServer(web.Handler(src, nil, 200*time.Millisecond))
	t.Cleanup(srv.Close)
	p := browsertest.Open(t, srv.URL+"/")
	got := p.WaitText("#site-degraded", func(s string) bool { return strings.Contains(s, "degraded") }, 20*time.Second)
	if !strings.Contains(got, "partly estimated") || !strings.Contains(got, "98.6% of nodes report") {
		t.Errorf("#site-degraded = %q", got)
	}
	if got := p.Text("#site-mw"); got != "49.8" {
		t.Errorf("#site-mw = %q, want the facility figure 49.8", got)
	}
	if got := p.Text("#site-headroom"); !strings.HasSuffix(got, "?") {
		t.Errorf("#site-headroom = %q, want it marked as uncertain", got)
	}
	if got := p.Texts(`tr.fac-row[data-key="dc1"] td.fac-src`); len(got) != 1 || got[0] != "node sum (est.)" {
		t.Errorf("facility source of the degraded site: %q", got)
	}
	// A metered hall's figure is measured whatever its coverage: no marker.
	if p.Count(`tr.hall-row[data-key="dc1/h1"] .deg-tag`) != 0 {
		t.Error("metered hall h1 marked degraded")
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page script errors: %q", errs)
	}
}

// An aggregator without facility power (older, or before its first
// facility window): the page shows GPU power against capacity as before and
// says so, with no made-up node or metered figures.
func TestLivePageGPUOnly(t *testing.T) {
	testenv.Short(t)
	src := newFakeSource()
	src.gpuOnly = true
	srv := httptest.NewServer(web.Handler(src, nil, 200*time.Millisecond))
	t.Cleanup(srv.Close)
	p := browsertest.Open(t, srv.URL+"/")
	if got := p.WaitText("#site-mw", func(s string) bool { return s != "—" }, 20*time.Second); got != "41.7" {
		t.Errorf("#site-mw = %q, want the GPU estimate 41.7", got)
	}
	if got := p.Text("#site-basis"); got != "GPU power" {
		t.Errorf("#site-basis = %q", got)
	}
	if got := p.Text("#site-headroom"); got != "13.8" {
		t.Errorf("#site-headroom = %q, want the aggregator's 13.8", got)
	}
	p.WaitCount("tr.fac-row", 3, 10*time.Second)
	if got, want := p.Texts(`tr.fac-row[data-key="dc1/h1"] td`), []string{"h1", "23.9", "—", "—", "—", "—", "GPU only", "23.9"}; !slices.Equal(got, want) {
		t.Errorf("facility row of dc1/h1 without facility power: %q", got)
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page script errors: %q", errs)
	}
}

// Coverage low but the meter fresh: the figure against capacity is the
// meter's, measured, so the headline carries no "partly estimated" marker
// (the coverage KPI still shows the silent nodes).
func TestLivePageMeteredNotDegraded(t *testing.T) {
	testenv.Short(t)
	srv := httptest.NewServer(web.Handler(meteredLowCoverage{newFakeSource()}, nil, 200*time.Millisecond))
	t.Cleanup(srv.Close)
	p := browsertest.Open(t, srv.URL+"/")
	p.WaitText("#site-mw", func(s string) bool { return s != "—" }, 20*time.Second)
	p.WaitCount("tr.fac-row", 3, 10*time.Second)
	if p.Count("#site-degraded.hidden") != 1 {
		t.Errorf("degraded marker on a metered figure: %q", p.Text("#site-degraded"))
	}
	if got := p.Text("#site-mw"); got != "51.3" {
		t.Errorf("#site-mw = %q, want the metered 51.3", got)
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page script errors: %q", errs)
	}
}

// meteredLowCoverage: the site metered (its halls' meters fresh) while
// coverage is below resolve_min_coverage.
type meteredLowCoverage struct{ f *fakeSource }

func (m meteredLowCoverage) Snapshot() web.Snapshot {
	s := m.f.Snapshot()
	site := &s.Sites[0]
	site.Degraded, site.FacilityDegraded = true, false
	site.MeteredW, site.FacilityW, site.FacilitySource = ptr(51.3e6), 51.3e6, "meter"
	return s
}
