package alerts

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"google.golang.org/protobuf/proto"
)

// Two hall aggregators (--scope) and a site aggregator fed by their hall
// rollups over NATS (--site-from-halls) show the same site figures as one
// aggregator over everything; the live-page snapshot carries them.
func TestHallAndSiteAggregatorsOverNATS(t *testing.T) {
	testenv.Short(t)
	w := newWorld(t, []sim.Job{{Name: "sync", Period: 2 * time.Second, Duty: 0.5, ComputeFrac: 0.9, CommFrac: 0.2}},
		[]rules.Rule{{Name: "site_power", Level: "site", Metric: rules.MetricPowerMW, Power: rules.PowerGPU, OfCapacity: f(0.95), Severity: "critical"}})
	ctx := context.Background()
	start := func(scope string, fromHalls bool, bucket string) *Engine {
		cfg := w.cfg
		cfg.Scope, cfg.SiteFromHalls, cfg.KVBucket = scope, fromHalls, bucket
		e, err := New(cfg, w.topo, w.nc, w.logger, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel, wait := e.background(ctx)
		in, err := e.subscribe(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.stop(); cancel(); wait() })
		return e
	}
	one := start("", false, "A_ONE")
	h1, h2 := start("dc1.h1", false, "A_H1"), start("dc1.h2", false, "A_H2")
	site := start("dc1", true, "A_SITE")
	var rep telemetry.NodeReport
	var sent uint64
	for win := 1; win <= 65; win++ {
		end := w.end(win)
		for i, n := range w.topo.Nodes() {
			w.fleet.Report(&rep, i, end, time.Second, 100*time.Millisecond)
			b, _ := proto.Marshal(&rep)
			subj, _ := telemetry.PowerSubject(n.Location)
			if err := w.nc.Publish(subj, b); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		waitFor(t, 10*time.Second, "reports", func() bool {
			return one.agg.Stats().Accepted == sent && h1.agg.Stats().Accepted+h2.agg.Stats().Accepted == sent
		})
		one.Tick(ctx, end)
		h1.Tick(ctx, end)
		h2.Tick(ctx, end)
		// the one aggregator publishes hall rollups too (identical figures,
		// the same Nats-Msg-Id): the stream keeps one of each, which is what
		// the site aggregator reads
		waitFor(t, 10*time.Second, "hall rollups", func() bool { return site.agg.Stats().Accepted == uint64(2*win) })
		site.Tick(ctx, end)
		got, want := site.Snapshot(), one.Snapshot()
		if len(got.Sites) != 1 || len(got.Halls) != 0 || len(want.Sites) != 1 || len(want.Halls) != 2 {
			t.Fatalf("snapshots: site aggregator %d sites %d halls; one %d sites %d halls", len(got.Sites), len(got.Halls), len(want.Sites), len(want.Halls))
		}
		g, x := got.Sites[0], want.Sites[0]
		close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
		if !close(g.PowerMW, x.PowerMW) || !close(g.PowerEstMW, x.PowerEstMW) || !close(g.PowerMaxMW, x.PowerMaxMW) ||
			g.NodesReporting != x.NodesReporting || g.NodesExpected != x.NodesExpected || !close(g.RampMWPerS, x.RampMWPerS) ||
			!close(g.SwingMW, x.SwingMW) || !close(g.OscFreqHz, x.OscFreqHz) || !close(g.OscMW, x.OscMW) || g.GPUTempMaxC != x.GPUTempMaxC {
			t.Fatalf("window %d: site from halls %+v\nwant %+v", win, g, x)
		}
		if win == 65 && (g.OscFreqHz < 0.45 || g.OscFreqHz > 0.55 || len(got.SiteSeries["dc1"]) != 600) {
			t.Fatalf("site osc %v Hz, series %d points", g.OscFreqHz, len(got.SiteSeries["dc1"]))
		}
	}
	if h := h1.Snapshot().Halls; len(h) != 1 || h[0].Key != "dc1/h1" || h[0].NodesReporting != 500 {
		t.Fatalf("hall aggregator snapshot %+v", h)
	}
}
