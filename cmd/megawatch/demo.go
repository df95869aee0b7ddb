package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// demoOptions are the demo's flags.
type demoOptions struct {
	topology   string
	scale      float64
	quick      bool
	forever    bool
	httpAddr   string
	influxURL  string
	noInflux   bool
	collectors int
	model      string
	logLevel   string
	keepData   bool
}

// runDemo runs the whole pipeline in one process on a simulated campus:
// an in-process NATS server with JetStream, simulated collectors (a few on
// the full NVML code path, the rest of the campus from the simulator's
// fleet model), ingest into InfluxDB (or a line-protocol file), and the
// aggregator with the alert rules and the live page. A scripted scenario
// shows what megawatch is for: a job ramps up, oscillates, checkpoints, a
// hall crosses 95% of its capacity (a page) and recovers (its resolve).
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o demoOptions
	fs := newFlagSet("demo", stderr)
	fs.StringVar(&o.topology, "topology", "", "topology file (default: the embedded demo campus of 6,400 nodes and 100 MW, configs/demo-topology.yaml)")
	fs.Float64Var(&o.scale, "scale", 1, "grow or shrink the demo campus: rows per hall and capacities ×scale (1 = 6,400 nodes, 100 MW of capacity)")
	fs.BoolVar(&o.quick, "quick", false, "compress the scenario to about one minute (tests use it)")
	fs.BoolVar(&o.forever, "forever", false, "keep running after the scenario, until interrupted")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:8080", "live page, /metrics, /healthz and /readyz")
	fs.StringVar(&o.influxURL, "influx-url", "", "write to this InfluxDB (database megawatch, created if missing) instead of starting influxd")
	fs.BoolVar(&o.noInflux, "no-influx", false, "write line protocol to a file even if influxd is installed")
	fs.IntVar(&o.collectors, "collectors", 4, "nodes that run the real collector on a simulated NVML driver (the rest come from the fleet model)")
	fs.StringVar(&o.model, "gpu-model", "dgxb200", "simulated node: dgxh100 (8×700 W) or dgxb200 (8×1000 W)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level of the components (logs go to stderr)")
	fs.BoolVar(&o.keepData, "keep-data", false, "keep the data directory (NATS store, influxd data, line-protocol file) after the run, and print how to query it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if o.scale <= 0 || o.scale > 20 {
		return fmt.Errorf("%w: --scale must be in (0, 20]", errUsage)
	}
	if o.topology != "" && o.scale != 1 {
		return fmt.Errorf("%w: --scale applies to the embedded demo campus, not to --topology", errUsage)
	}
	logger, err := newLogger(stderr, o.logLevel)
	if err != nil {
		return err
	}
	d, err := newDemo(o, stdout, logger)
	if err != nil {
		return err
	}
	defer d.close()
	return d.run(ctx)
}

type demo struct {
	o         demoOptions
	out       io.Writer
	logger    *slog.Logger
	dir       string
	topo      *topology.Topology
	scen      scenario
	closers   []func()
	influx    string // where the data went, for the summary
	lpFile    string
	influxDB  *localInfluxd
	influxBin string
}

func newDemo(o demoOptions, out io.Writer, logger *slog.Logger) (*demo, error) {
	d := &demo{o: o, out: out, logger: logger}
	dir, err := os.MkdirTemp("", "megawatch-demo-")
	if err != nil {
		return nil, err
	}
	d.dir = dir
	// Registered first, so it runs last: after every component stopped, on
	// every way out of run (an error, the end, Ctrl-C).
	d.closers = append(d.closers, func() {
		if d.o.keepData {
			fmt.Fprintf(d.out, "data kept in %s (--keep-data); remove it when done\n", d.dir)
			return
		}
		_ = os.RemoveAll(d.dir)
	})
	d.topo, err = demoTopology(o.topology, o.scale)
	if err != nil {
		d.close()
		return nil, err
	}
	d.scen = newScenario(o.quick)
	return d, nil
}

func (d *demo) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// demoTopology loads --topology, or the embedded demo campus scaled.
func demoTopology(path string, scale float64) (*topology.Topology, error) {
	if path != "" {
		return topology.Load(path)
	}
	b, err := configs.FS.ReadFile("demo-topology.yaml")
	if err != nil {
		return nil, err
	}
	var f topology.File
	if err := config.Decode(b, "configs/demo-topology.yaml", &f); err != nil {
		return nil, err
	}
	if scale != 1 {
		// The demo campus is site → halls → rows → racks; scale the rows.
		site := &f.Domains[0]
		hall := &site.Children[0]
		row := &hall.Children[0]
		rows := max(1, int(math.Round(20*scale)))
		row.Name = fmt.Sprintf("r[01-%02d]", rows)
		hall.CapacityKW = hall.CapacityKW * float64(rows) / 20
		site.CapacityKW = 2 * hall.CapacityKW
	}
	return f.Build("configs/demo-topology.yaml")
}

func (d *demo) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	topo := d.topo
	p := func(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }
	site := topo.Sites()[0]
	p("megawatch demo: %d simulated %s nodes (%d GPUs) in %d halls, %.1f MW of capacity", topo.NumNodes(), d.o.model, 8*topo.NumNodes(),
		len(topo.DomainsAt(topology.LevelHall)), site.CapacityW/1e6)

	// 1. NATS with JetStream, in process.
	ns, err := natsx.RunEmbedded(filepath.Join(d.dir, "nats"), -1)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { ns.Shutdown(); ns.WaitForShutdown() })
	ncfg := natsx.DefaultConfig()
	ncfg.Servers = []string{ns.ClientURL()}
	ncfg.Name = "megawatch-demo"
	nc, err := natsx.Connect(ncfg, d.logger)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return err
	}
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		return err
	}
	p("nats:      in-process server %s, JetStream in %s", ns.ClientURL(), filepath.Join(d.dir, "nats"))

	// 2. Where the data goes: InfluxDB if we have one, else a file.
	target, err := d.influxTarget(ctx)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()

	// 3. Ingest.
	icfg := ingest.DefaultConfig()
	icfg.NATS = ncfg
	icfg.Targets = []ingest.Target{target}
	icfg.GPUEvery = 10 // per-GPU points every 10 s; node and rollup points every second
	icfg.MetricsAddr = ""
	icfg.EnsureDB = target.URL != ""
	icfg.TopologyFile = d.o.topology // rollup tags follow its levels ("" = the embedded ones)
	ing, err := ingest.New(icfg, nc, d.logger.With("component", "ingest"), reg)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}

	// 4. Aggregator, rules, notifiers, live page.
	acfg := alerts.DefaultConfig()
	acfg.NATS = ncfg
	acfg.HTTPAddr = d.o.httpAddr
	// Thousands of simulated nodes report from one process on a small
	// machine: give late reports more time to land in their own window.
	acfg.Grace = 1500 * time.Millisecond
	// Ramp, swing and oscillation look back over the analysis window (60 s in
	// production); the compressed scenario looks back over less.
	acfg.AnalysisWindow = d.scen.at(60)
	acfg.Rules = d.scen.rules(acfg.Rules)
	// The nodes without node power are modeled as what they are.
	acfg.NodeModel = alerts.NodeModelConfig{NodeType: d.o.model}
	acfg.Notifiers.Alertmanager.URLs = nil
	acfg.Notifiers.Alertmanager.URLsEnv = ""
	acfg.Notifiers.PagerDuty.RoutingKeyEnv = ""
	acfg.Notifiers.Log.Enabled = true
	acfg.Notifiers.LogOnly = true // the demo prints its pages in the terminal
	pages := newPagePrinter(d.out, d.logger.Handler())
	eng, err := alerts.New(acfg, topo, nc, slog.New(pages), reg)
	if err != nil {
		return fmt.Errorf("alerts: %w", err)
	}

	// 5. The simulated campus.
	scfg := d.scen.sim(d.o.model)
	locs := make([]telemetry.Location, topo.NumNodes())
	for i, n := range topo.Nodes() {
		locs[i] = n.Location
	}
	nReal := min(d.o.collectors, len(locs))
	fleet, err := sim.NewFleet(scfg, locs[nReal:])
	if err != nil {
		return err
	}
	fp, err := newFleetPublisher(fleet, locs[nReal:], js, time.Second, 100*time.Millisecond)
	if err != nil {
		return err
	}
	// 6. The facility meters of the topology, simulated over the same
	// nodes (as `megawatch meters --sim`): they read what the nodes draw,
	// collectors up or down, with the feeds' losses and non-IT load.
	mcfg := meters.DefaultConfig()
	mcfg.NATS = ncfg
	mcfg.EnsureStream = false // created above
	mcfg.Interval = time.Second
	mcfg.Poller = "demo"
	mcfg.MetricsAddr = ""
	mcfg.Version = Version()
	mcfg.Sim = scfg
	mp, err := meters.NewSim(mcfg, topo, js, d.logger.With("component", "meters"), reg)
	if err != nil {
		return fmt.Errorf("meters: %w", err)
	}

	errc := make(chan error, 8)
	goRun := func(name string, f func(context.Context) error) {
		go func() {
			defer func() {
				// A crashing component ends the demo like an error does, so
				// that the data directory is still removed.
				if r := recover(); r != nil {
					errc <- fmt.Errorf("%s: panic: %v", name, r)
				}
			}()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	goRun("ingest", ing.Run)
	goRun("alerts", eng.Run)
	goRun("meters", mp.Run)
	for i := range nReal {
		dev, err := sim.New(scfg, locs[i], time.Now)
		if err != nil {
			return err
		}
		ccfg := collector.DefaultConfig()
		ccfg.NATS = ncfg
		ccfg.MetricsAddr = ""
		ccfg.Version = Version()
		c, err := collector.New(ccfg, dev, locs[i], nc, d.logger.With("component", "collector", "node", locs[i].Node), reg)
		if err != nil {
			return fmt.Errorf("collector %s: %w", locs[i].Node, err)
		}
		goRun("collector "+locs[i].Node, c.Run)
	}
	fp.warn = func(msg string, args ...any) { d.logger.Warn(msg, args...) }
	goRun("fleet", func(ctx context.Context) error { return fp.runRealTime(ctx, 0) })
	if d.o.httpAddr != "" {
		p("live page: http://%s  (site and hall MW, facility power, 10 Hz site power, alerts; works offline)", d.o.httpAddr)
	}
	p("collectors: %d on the NVML code path (simulated driver), %d from the fleet model; one report per node per second", nReal, len(locs)-nReal)
	p("node power: BMC (Redfish) on most nodes, in-band meter (hwmon) on racks rk09, none on nodes n15-n16 of racks rk10 (modeled by the aggregator)")
	p("meters:    %d simulated (switchgear per hall: 4%% UPS/transformer loss + 700 W/node of cooling and lighting; branch circuits per row: 1%% busway loss)", mp.Meters())
	p("scenario:  %s", d.scen.describe())
	p("")

	// 7. Watch: print the site and its halls once a second. The scenario
	// ends when the aggregator has evaluated its last window (event time):
	// on a busy machine the aggregator may lag, and the page and its
	// resolve still play out, later. Past a generous wall-clock limit the
	// demo says that it fell behind.
	end := d.scen.epoch.Add(d.scen.length)
	limit := end.Add(max(2*time.Minute, d.scen.length))
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var lastAt time.Time
	for {
		select {
		case <-ctx.Done():
			d.summary(pages)
			return nil
		case err := <-errc:
			return err
		case now := <-tick.C:
			// Print each aggregated window once, labelled by what the
			// script did during it.
			// (Windows before the first report arrived are skipped.)
			if s := eng.Snapshot(); len(s.Sites) > 0 && s.At.After(lastAt) && (!lastAt.IsZero() || s.Sites[0].NodesReporting > 0) {
				lastAt = s.At
				printSnapshot(d.out, s, s.At.Sub(d.scen.epoch), d.scen.phase(s.At.Add(-time.Second/2)))
			}
			if d.o.forever {
				continue
			}
			if at := eng.Snapshot().At; !at.Before(end) || now.After(limit) {
				cancel()
				d.summary(pages)
				if at.Before(end) {
					return fmt.Errorf("the aggregator fell behind: at %s it had evaluated up to %s of the %s scenario (is the machine overloaded?)",
						fmtElapsed(now.Sub(d.scen.epoch)), fmtElapsed(at.Sub(d.scen.epoch)), fmtElapsed(d.scen.length))
				}
				return nil
			}
		}
	}
}

func (d *demo) influxTarget(ctx context.Context) (ingest.Target, error) {
	p := func(format string, a ...any) { fmt.Fprintf(d.out, format+"\n", a...) }
	t := ingest.Target{Name: "demo", Bucket: "megawatch/autogen", Org: "megawatch"}
	// Into InfluxDB the demo writes as the shipped ingest config does: each
	// measurement in its retention policy (created by ingest's ensure-db),
	// which the shipped Grafana dashboards read.
	shipped := ingest.DefaultConfig().Targets[0]
	withPolicies := func(t ingest.Target) ingest.Target {
		t.Measurements, t.RetentionPolicies = shipped.Measurements, shipped.RetentionPolicies
		return t
	}
	switch {
	case d.o.influxURL != "":
		if err := influxCreateDB(d.o.influxURL, "megawatch"); err != nil {
			return t, err
		}
		t.URL = d.o.influxURL
		d.influx = d.o.influxURL + " (database megawatch)"
		p("influxdb:  %s, database megawatch", d.o.influxURL)
		return withPolicies(t), nil
	case !d.o.noInflux:
		if bin, ok := findInfluxd(); ok {
			dir := filepath.Join(d.dir, "influxd")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return t, err
			}
			db, err := startInfluxd(ctx, bin, dir)
			if err != nil {
				return t, err
			}
			d.closers = append(d.closers, db.Stop)
			if err := db.CreateDB("megawatch"); err != nil {
				return t, err
			}
			d.influxDB, d.influxBin = db, bin
			t.URL = db.URL
			d.influx = db.URL + " (database megawatch; data in " + dir + ")"
			p("influxdb:  started %s at %s, database megawatch, data in %s", bin, db.URL, dir)
			p("           query it: curl -G %s/query --data-urlencode db=megawatch --data-urlencode \"q=SELECT last(power_mw) FROM %s.rollup WHERE level='hall' GROUP BY hall\"", db.URL, rollupPolicy(shipped))
			return withPolicies(t), nil
		}
	}
	d.lpFile = filepath.Join(d.dir, "megawatch.lp")
	t.File = d.lpFile
	d.influx = d.lpFile + " (InfluxDB line protocol)"
	p("influxdb:  none found; writing line protocol to %s", d.lpFile)
	p("           to write to InfluxDB instead: scripts/install-test-servers.sh (builds influxd 1.8.10 with go install), or --influx-url")
	return t, nil
}

// rollupPolicy is the retention policy t writes rollups to.
func rollupPolicy(t ingest.Target) string {
	b := t.Bucket
	if m, ok := t.Measurements["rollup"]; ok {
		b = m
	}
	_, rp, _ := strings.Cut(b, "/")
	return rp
}

func (d *demo) summary(pages *pagePrinter) {
	fired, resolved := pages.counts()
	fmt.Fprintf(d.out, "\ndemo done: %d alert notifications firing, %d resolved; data written to %s\n", fired, resolved, d.influx)
	if d.o.keepData {
		fmt.Fprintf(d.out, "everything lived in %s (kept: --keep-data)\n", d.dir)
		if d.influxDB != nil {
			fmt.Fprintf(d.out, "query it later: %s -config %s &  then the curl above (same port)\n", d.influxBin, filepath.Join(d.influxDB.Dir, "influxd.conf"))
		}
	} else {
		fmt.Fprintf(d.out, "everything lived in %s (removed on exit; --keep-data keeps it)\n", d.dir)
	}
}

func printSnapshot(w io.Writer, s webSnapshot, elapsed time.Duration, phase string) {
	var b strings.Builder
	// Power against capacity is what the capacity rules evaluate: the
	// facility figure (metered, else the node sum) when the aggregator has
	// one, else the GPU estimate (silent nodes at their last known power);
	// a degraded domain says so. Then the three figures side by side.
	mark := func(d bool) string {
		if d {
			return "  DEGRADED (partly estimated)"
		}
		return ""
	}
	for _, st := range s.Sites {
		osc := "  osc   —             "
		if st.OscFound {
			osc = fmt.Sprintf("  osc %4.2f Hz %5.1f MW", st.OscFreqHz, st.OscMW)
		}
		mw := st.PowerShownMW()
		fmt.Fprintf(&b, "%6s  %-22s site %-6s %6.1f / %5.1f MW %s %3.0f%%  %s  ramp %5.1f MW/s%s  coverage %5.1f%%%s\n",
			fmtElapsed(elapsed), phase, st.Key, mw, st.CapacityMW, bar(mw/st.CapacityMW, 20), 100*mw/st.CapacityMW,
			figures(st), st.RampMWPerS, osc, 100*st.Coverage, mark(st.ShownDegraded()))
	}
	for _, h := range s.Halls {
		mw := h.PowerShownMW()
		fmt.Fprintf(&b, "%6s  %-22s hall %-6s %6.1f / %5.1f MW %s %3.0f%%  %s  headroom %5.1f MW  coverage %5.1f%%%s\n",
			"", "", h.Path[len(h.Path)-1], mw, h.CapacityMW, bar(mw/h.CapacityMW, 20), 100*mw/h.CapacityMW, figures(h), h.CapacityMW-mw, 100*h.Coverage, mark(h.ShownDegraded()))
	}
	_, _ = io.WriteString(w, b.String())
}

// figures is a domain's three figures side by side, and the unaccounted
// power (metered − reporting nodes) with the source of the facility figure:
// "GPU  24.8 · node  44.6 · metered  48.6 · unacc.   4.0 MW (meter)".
// Metered is "—" without a meter, "stale" when its meters have no fresh
// reading; an aggregator without facility power shows GPU power only.
func figures(d webDomain) string {
	if !d.HasFacility() {
		return fmt.Sprintf("GPU %5.1f · node     — · metered     — · unacc.     — MW (GPU only)", d.PowerEstMW)
	}
	metered, unacc := "    —", "    —"
	if d.MetersStale > 0 {
		metered = "stale"
	}
	if d.MeteredW != nil {
		metered = fmt.Sprintf("%5.1f", *d.MeteredW/1e6)
	}
	if d.UnaccountedW != nil {
		unacc = fmt.Sprintf("%5.1f", *d.UnaccountedW/1e6)
	}
	src := strings.ToLower(d.FacilitySource)
	switch {
	case strings.Contains(src, "meter"):
		src = "meter"
	case strings.Contains(src, "node"):
		src = "node sum"
	}
	if d.FacilityDegraded {
		src += ", partly estimated"
	}
	return fmt.Sprintf("GPU %5.1f · node %5.1f · metered %s · unacc. %s MW (%s)", d.GPUW/1e6, d.NodeW/1e6, metered, unacc, src)
}

func fmtElapsed(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s < 0 {
		return "-" + fmtElapsed(-d)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

func bar(frac float64, width int) string {
	if math.IsNaN(frac) || frac < 0 {
		frac = 0
	}
	n := int(math.Round(frac * float64(width)))
	n = min(n, width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}
