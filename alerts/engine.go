// Package alerts is `megawatch alerts`: the aggregator that sums node power
// up the power hierarchy every window (package aggregate), publishes the
// rollups, evaluates the alert rules (package rules) and hands state changes
// to the notifiers (package notify), with alert state persisted in a NATS KV
// bucket. It also serves the live page (package web) and /metrics.
package alerts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/megawatch/megawatch/alerts/aggregate"
	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/alerts/web"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/obs"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// Engine is one alerts process: aggregator, rule evaluator, notifiers.
type Engine struct {
	cfg    Config
	topo   *topology.Topology
	nc     *nats.Conn
	js     jetstream.JetStream
	logger *slog.Logger
	reg    prometheus.Registerer
	scope  *topology.Domain

	agg   *aggregate.Aggregator
	disp  *notify.Dispatcher
	store *store

	mu         sync.Mutex // eval, lastResend, seq, rollup, buf
	eval       *rules.Evaluator
	lastResend time.Time
	seq        uint64
	rollup     telemetry.Rollup
	buf        []byte
	subjects   []string // rollup subject per domain ID (published ones)
	msg        nats.Msg

	snap  atomic.Pointer[web.Snapshot]
	ready atomic.Bool
	m     metrics

	paging []string       // names of the notifiers that reach a person (notifiers.go)
	live   *obs.Heartbeat // beats every tick of Run's loop (/healthz)
	in     *input
	min    *input // meter reports (MEGAWATCH_METER); nil without meters or when it could not start
	// meterErr: the meter stream could not be set up (Start); windows are
	// ticked without meters.
	meterErr error
	// meterHook, when set (tests), runs before each meter report is handled.
	meterHook func()
	// meterStuck, when set (tests), replaces meterStuckAfter's figure.
	meterStuck time.Duration
	clock      *clock
	replica    string
	started    time.Time
	lagNs      atomic.Int64 // how late the last (or the awaited) tick is
	watch      watchState   // heartbeat and lag alert (Run's goroutine only)
}

type metrics struct {
	ticks     prometheus.Counter
	tickSecs  prometheus.Histogram
	rollups   prometheus.Counter
	pubErrors prometheus.Counter
	firing    prometheus.Gauge
	changes   *prometheus.CounterVec
	lag       prometheus.Gauge
	lagMax    prometheus.Gauge
	// ticksNoMeters: windows ticked without waiting for the meter input
	// (missing, or stuck), while the aggregator has meters.
	ticksNoMeters prometheus.Counter
}

// New builds the engine; Run starts it. reg may be nil.
func New(cfg Config, topo *topology.Topology, nc *nats.Conn, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := rules.Validate(cfg.Rules, topo.Levels()); err != nil {
		return nil, fmt.Errorf("rules against topology %s: %w", topo.Source(), err)
	}
	e := &Engine{cfg: cfg, topo: topo, nc: nc, logger: logger, reg: reg, replica: cfg.Replica, started: time.Now()}
	if e.replica == "" {
		e.replica, _ = os.Hostname()
		if e.replica == "" {
			e.replica = "megawatch-alerts"
		}
	}
	if cfg.Scope != "" {
		d, err := topo.Scope(cfg.Scope)
		if err != nil {
			return nil, fmt.Errorf("scope: %w", err)
		}
		e.scope = d
	}
	fosc, foscAll := cfg.facilityOscLevels()
	agg, err := aggregate.New(aggregate.Config{Window: cfg.Window, Slot: cfg.Slot, StaleAfter: cfg.StaleAfter, Grace: cfg.Grace,
		AnalysisWindow: cfg.AnalysisWindow, Scope: e.scope, FromHalls: cfg.SiteFromHalls, OscLevels: cfg.oscLevels(),
		MinCoverage: cfg.ResolveMinCoverage, Plausible: cfg.Plausible, NodeModel: cfg.NodeModel.model(),
		FacilityOscLevels: fosc, FacilityOscAll: foscAll}, topo)
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	e.agg = agg
	e.subjects = make([]string, len(topo.Domains()))
	var doms []rules.Domain
	for _, id := range agg.Out() {
		d := topo.Domains()[id]
		if e.subjects[id], err = telemetry.RollupSubject(d.Level, d.Path); err != nil {
			return nil, fmt.Errorf("domain %s: %w", d.Key(), err)
		}
		doms = append(doms, rules.Domain{ID: id, Level: d.Level, Path: d.Path, Key: d.Key(), CapacityW: d.CapacityW})
	}
	if e.eval, err = rules.NewEvaluator(cfg.Rules, doms, cfg.ResolvedRetention); err != nil {
		return nil, err
	}
	if nc != nil {
		if e.js, err = jetstream.New(nc); err != nil {
			return nil, fmt.Errorf("jetstream: %w", err)
		}
	}
	ns, paging, err := e.notifiers()
	e.paging = paging
	e.live = obs.NewHeartbeat(max(15*time.Second, 30*cfg.Window+cfg.Grace))
	if err != nil {
		return nil, err
	}
	e.disp = notify.NewDispatcher(cfg.Notifiers.Dispatch, ns, logger, reg)
	e.initMetrics()
	e.snap.Store(&web.Snapshot{WindowMs: int(cfg.Window.Milliseconds()), SiteSeries: map[string][]web.Point{}})
	return e, nil
}

func (e *Engine) initMetrics() {
	e.m = metrics{
		ticks:     prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_alerts_ticks_total", Help: "Windows aggregated and evaluated."}),
		tickSecs:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "megawatch_alerts_tick_seconds", Help: "Time to aggregate, publish and evaluate one window.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		rollups:   prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_alerts_rollups_published_total", Help: "Rollups published."}),
		pubErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_alerts_rollup_publish_errors_total", Help: "Rollups that could not be published."}),
		firing:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "megawatch_alerts_firing", Help: "Alerts firing now."}),
		changes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_alerts_state_changes_total", Help: "Alert notifications by rule and state."}, []string{"rule", "state"}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "megawatch_alerts_lag_seconds",
			Help: "How far the aggregator is behind: wall time minus the deadline (window end + grace) of the window it ticks or waits for. Its figures stay those of the window (event time)."}),
		lagMax: prometheus.NewGauge(prometheus.GaugeOpts{Name: "megawatch_alerts_lag_max_seconds", Help: "Largest megawatch_alerts_lag_seconds since the start."}),
		ticksNoMeters: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_alerts_ticks_without_meters_total",
			Help: "Windows ticked without the meter input (MEGAWATCH_METER missing, or its input making no progress) while the aggregator has meters: their meters count as stale."}),
	}
	if e.reg == nil {
		return
	}
	e.reg.MustRegister(e.m.ticks, e.m.tickSecs, e.m.rollups, e.m.pubErrors, e.m.firing, e.m.changes, e.m.lag, e.m.lagMax, e.m.ticksNoMeters)
	e.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "megawatch_alerts_meter_input_backlog",
		Help: "Meter reports stored in MEGAWATCH_METER and not yet delivered to the aggregator (at its last check)."},
		func() float64 {
			if e.min == nil {
				return 0
			}
			return float64(e.min.backlog.Load())
		}))
	for _, r := range []struct {
		name string
		get  func(aggregate.MeterStats) uint64
	}{
		{"accepted", func(s aggregate.MeterStats) uint64 { return s.Accepted }}, {"stale", func(s aggregate.MeterStats) uint64 { return s.Stale }},
		{"decode_error", func(s aggregate.MeterStats) uint64 { return s.Decode }}, {"unknown", func(s aggregate.MeterStats) uint64 { return s.Unknown }},
		{"mismatch", func(s aggregate.MeterStats) uint64 { return s.Mismatch }}, {"late", func(s aggregate.MeterStats) uint64 { return s.Late }},
		{"future", func(s aggregate.MeterStats) uint64 { return s.Future }}, {"shape", func(s aggregate.MeterStats) uint64 { return s.Shape }},
	} {
		e.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "megawatch_alerts_meter_reports_total", Help: "Meter reports received, by outcome.",
			ConstLabels: prometheus.Labels{"result": r.name}}, func() float64 { return float64(r.get(e.agg.MeterStats())) }))
	}
	e.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "megawatch_alerts_input_backlog",
		Help: "Messages stored in the stream and not yet delivered to the aggregator (at its last check)."},
		func() float64 {
			if e.in == nil {
				return 0
			}
			return float64(e.in.backlog.Load())
		}))
	for _, r := range []struct {
		name string
		get  func(aggregate.Stats) uint64
	}{
		{"accepted", func(s aggregate.Stats) uint64 { return s.Accepted }}, {"decode_error", func(s aggregate.Stats) uint64 { return s.Decode }},
		{"unknown", func(s aggregate.Stats) uint64 { return s.Unknown }}, {"mismatch", func(s aggregate.Stats) uint64 { return s.Mismatch }},
		{"late", func(s aggregate.Stats) uint64 { return s.Late }}, {"future", func(s aggregate.Stats) uint64 { return s.Future }},
		{"shape", func(s aggregate.Stats) uint64 { return s.Shape }},
		{"implausible", func(s aggregate.Stats) uint64 { return s.Implausible }},
		{"forged_id", func(s aggregate.Stats) uint64 { return s.Forged }},
	} {
		e.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "megawatch_alerts_inputs_total", Help: "Reports (or hall rollups) received, by outcome.",
			ConstLabels: prometheus.Labels{"result": r.name}}, func() float64 { return float64(r.get(e.agg.Stats())) }))
	}
}

// Run subscribes, ticks once per window (at window end + grace), publishes
// rollups, evaluates, notifies and serves http_addr until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	if e.nc == nil {
		return errors.New("alerts: no NATS connection")
	}
	if err := e.Start(ctx); err != nil {
		return err
	}
	dcancel, wait := e.background(ctx)
	if e.cfg.HTTPAddr != "" {
		gath, _ := e.reg.(*prometheus.Registry)
		if gath == nil {
			gath = prometheus.NewRegistry()
		}
		mux := obs.Handler(obs.Options{Registry: gath, Ready: e.readyErr, Detail: e.readyDetail, Live: e.live})
		mux.Handle("/", web.Handler(e, e.logger, e.cfg.Window))
		addr, err := obs.Serve(ctx, e.cfg.HTTPAddr, mux, e.logger)
		if err != nil {
			dcancel()
			wait()
			return err
		}
		e.logger.Info("alerts http", "addr", addr)
	}
	// The first window ticked is the next one whose deadline is ahead; read
	// from its end (its reports are published after it), or from now.
	next := time.Now().Add(-e.cfg.Grace).Truncate(e.cfg.Window).Add(e.cfg.Window)
	from := minTime(time.Now(), next)
	var gate *meterGate
	if e.agg.HasMeters() {
		// Meters first: the node input's first tick asks the gate.
		e.min = e.subscribeMeters()
		gate = newMeterGate(ctx, e.min, e.meterStuckAfter())
	}
	e.clock = newClock(ctx, e, next, gate)
	if e.min != nil {
		e.min.before = e.clock.meterBefore
	}
	if err := e.startMeters(ctx, from); err != nil {
		e.logger.Error("meter input not started: windows are ticked without meters (their meters count as stale)", "err", err)
		e.min, e.clock.meters.in = nil, nil
	}
	in, err := e.subscribe(ctx, from)
	if err != nil {
		e.stopMeters()
		dcancel()
		wait()
		return err
	}
	e.ready.Store(true)
	e.logger.Info("alerts running", "scope", e.cfg.Scope, "site_from_halls", e.cfg.SiteFromHalls, "domains", len(e.agg.Out()),
		"rule_instances", e.eval.Instances(), "stream", in.stream, "subject", in.filter, "meters", e.min != nil, "replica", e.replica)
	for {
		if !e.clock.step(ctx, in) {
			e.ready.Store(false)
			in.stop()
			e.stopMeters()
			dcancel() // dispatcher and store make one last bounded attempt
			wait()
			return nil
		}
		e.live.Beat()
		e.watchdog(time.Now(), true)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func (e *Engine) setLag(lag time.Duration) {
	lag = max(0, lag)
	e.lagNs.Store(int64(lag))
	e.m.lag.Set(lag.Seconds())
	if s := lag.Seconds(); s > readGauge(e.m.lagMax) {
		e.m.lagMax.Set(s)
	}
}

// background runs the dispatcher and the state store until the returned
// cancel is called; wait returns once both made their last attempt.
func (e *Engine) background(ctx context.Context) (cancel func(), wait func()) {
	var wg sync.WaitGroup
	dctx, dcancel := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { e.disp.Run(dctx) })
	wg.Go(func() { e.store.run(dctx) })
	return dcancel, wg.Wait
}

func (e *Engine) readyErr() error {
	if !e.ready.Load() {
		return errors.New("starting")
	}
	if !e.nc.IsConnected() {
		return errors.New("nats not connected")
	}
	return nil
}

// Start sets up the rollup stream and the KV bucket and restores alert
// state. Run calls it; tests that drive Tick themselves call it directly.
func (e *Engine) Start(ctx context.Context) error {
	if e.js == nil {
		return errors.New("alerts: no NATS connection")
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := natsx.EnsureStream(sctx, e.js, e.cfg.Streams.RollupStream()); err != nil {
		return err
	}
	if !e.cfg.SiteFromHalls {
		if _, err := natsx.EnsureStream(sctx, e.js, e.cfg.Streams.PowerStream()); err != nil {
			return err
		}
	}
	kv, err := e.js.CreateOrUpdateKeyValue(sctx, jetstream.KeyValueConfig{Bucket: e.cfg.KVBucket, Description: "megawatch alert state per (rule, domain)",
		History: 1, Replicas: e.cfg.Streams.Replicas, Storage: jetstream.FileStorage})
	if err != nil {
		return fmt.Errorf("kv bucket %s: %w", e.cfg.KVBucket, err)
	}
	e.store = newStore(kv, e.logger)
	recs, err := e.store.load(sctx)
	if err != nil {
		return err
	}
	e.mu.Lock()
	n := e.eval.Restore(recs)
	e.mu.Unlock()
	e.logger.Info("alert state restored", "bucket", e.cfg.KVBucket, "records", len(recs), "matched", n)
	if e.agg.HasMeters() {
		// Like the power stream: created if missing, so the meter input
		// can start before `megawatch meters` ever ran. A failure (a
		// request the account may not make times out) is no reason not to
		// alert: windows then go without meters (stale). Last, on its own
		// deadline, so that it cannot take the others' time.
		mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
		defer mcancel()
		if _, err := natsx.EnsureStream(mctx, e.js, e.cfg.Streams.MeterStream()); err != nil {
			e.meterErr = err
			e.logger.Error("meter stream not set up: windows are ticked without meters (their meters count as stale)", "stream", telemetry.StreamMeter, "err", err)
		}
	}
	return nil
}

// subscribe reads node reports (or hall rollups for a site aggregator)
// from their stream, from the messages stored at or after from.
func (e *Engine) subscribe(ctx context.Context, from time.Time) (*input, error) {
	stream, subj := telemetry.StreamPower, telemetry.PowerWildcard
	handle := func(subject string, data []byte, msgID string) {
		// A report whose Msg-Id names another node or window is a forgery
		// (its id made JetStream drop the real report as a duplicate; the
		// victim's collector re-publishes it): never summed.
		if aggregate.CheckReportMsgID(data, msgID) != nil {
			e.agg.CountForged()
			return
		}
		_ = e.agg.HandleReport(subject, data)
	}
	if e.scope != nil {
		subj = powerFilter(e.scope)
	}
	if e.cfg.SiteFromHalls {
		stream = telemetry.StreamRollup
		subj = telemetry.RollupPrefix + "." + topology.LevelHall + ".>"
		if e.scope != nil {
			subj = telemetry.RollupPrefix + "." + topology.LevelHall + "." + e.scope.Path[0] + ".>"
		}
		handle = func(_ string, data []byte, _ string) { _ = e.agg.HandleRollup(data) }
	}
	in := newInput(e.js, stream, subj, e.cfg.InputBatch, handle)
	if e.clock != nil {
		in.before = e.clock.beforeMsg
	}
	if err := in.start(ctx, from); err != nil {
		return nil, err
	}
	e.in = in
	return in, nil
}

// powerFilter is the power subject filter of a domain's subtree. Power
// subjects carry only the canonical levels (site.hall.row.rack.node), so an
// extra level such as a pdu filters on its nearest canonical ancestor (the
// aggregator then sums only the nodes under the pdu).
func powerFilter(d *topology.Domain) string {
	var names []string
	for a := d; a != nil; a = a.Parent {
		switch a.Level {
		case topology.LevelSite, topology.LevelHall, topology.LevelRow, topology.LevelRack:
			names = append([]string{a.Name}, names...)
		}
	}
	subj := telemetry.PowerPrefix
	for _, n := range names {
		subj += "." + n
	}
	return subj + ".>"
}

// Tick aggregates the window ending at end, publishes its rollups,
// evaluates the rules, hands the state changes to the notifiers and
// refreshes the live page's snapshot.
func (e *Engine) Tick(_ context.Context, end time.Time) []notify.Alert {
	start := time.Now()
	st := e.agg.Tick(end)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	e.publish(st, end)
	changes := e.eval.Eval(end, source(st))
	if dirty := e.eval.Dirty(); len(dirty) > 0 && e.store != nil {
		e.store.put(dirty)
	}
	for _, a := range changes {
		e.m.changes.WithLabelValues(a.Rule, a.State).Inc()
	}
	e.disp.Send(changes)
	if iv := e.disp.ResendInterval(); iv > 0 && end.Sub(e.lastResend) >= iv {
		// Alerts that changed state in this tick were just sent.
		active := e.eval.Active(end)
		resend := active[:0]
		for _, a := range active {
			if !slices.ContainsFunc(changes, func(c notify.Alert) bool { return c.Fingerprint == a.Fingerprint }) {
				resend = append(resend, a)
			}
		}
		e.disp.Resend(resend)
		e.lastResend = end
	}
	e.snapshot(st, end)
	e.m.ticks.Inc()
	e.m.tickSecs.Observe(time.Since(start).Seconds())
	return changes
}

func (e *Engine) publish(st []aggregate.DomainState, end time.Time) {
	if e.nc == nil {
		return
	}
	ms := ":" + strconv.FormatInt(end.UnixMilli(), 10)
	lagMs := uint32(min(time.Duration(e.lagNs.Load()).Milliseconds(), 1<<31))
	msg := &e.msg
	if msg.Header == nil {
		msg.Header = nats.Header{telemetry.HeaderSchema: {telemetry.SchemaVersion}, telemetry.HeaderMsgID: {""}}
	}
	for _, id := range e.agg.Out() {
		d := e.topo.Domains()[id]
		st[id].Fill(d, e.cfg.Window, e.cfg.Slot, e.seq, &e.rollup)
		e.rollup.LagMs = lagMs
		var err error
		e.buf, err = proto.MarshalOptions{}.MarshalAppend(e.buf[:0], &e.rollup)
		if err != nil {
			e.m.pubErrors.Inc()
			continue
		}
		// PublishMsg copies the data into the connection's buffer, so the
		// message and its buffer are reused.
		msg.Subject, msg.Data = e.subjects[id], e.buf
		// Two replicas publish the same rollup: the stream keeps one.
		msg.Header[telemetry.HeaderMsgID][0] = "rollup:" + d.Key() + ms
		if err := e.nc.PublishMsg(msg); err != nil {
			e.m.pubErrors.Inc()
			continue
		}
		e.m.rollups.Inc()
	}
}

// source adapts the tick's domain states to the rule evaluator (MW units).
type source []aggregate.DomainState

func (s source) Value(id int, metric, power string, band []float64) (float64, float64, bool) {
	d := &s[id]
	fac := power == rules.PowerFacility
	an := &d.Analysis
	if fac {
		an = &d.Facility
	}
	switch metric {
	// Power figures are estimates that missing data cannot lower: GPU power
	// with silent nodes at their last known power; facility power metered,
	// or else the node sum with silent nodes at their last node power.
	// Headroom follows them.
	case rules.MetricPowerMW:
		if fac {
			return d.FacilityW / 1e6, 0, true
		}
		return d.PowerEstW / 1e6, 0, true
	case rules.MetricPowerMaxMW:
		if fac {
			return d.FacilityMaxW / 1e6, 0, true
		}
		return d.PowerMaxEstW / 1e6, 0, true
	case rules.MetricHeadroomMW:
		if fac {
			return d.FacilityHeadroomW / 1e6, 0, true
		}
		return d.HeadroomW / 1e6, 0, true
	case rules.MetricRampMWPerS:
		return an.RampWPerS / 1e6, 0, an.HasAnalysis
	case rules.MetricSwingMW:
		return an.SwingW / 1e6, 0, an.HasAnalysis
	case rules.MetricOscillationMW:
		f, pp, ok := an.Band(band[0], band[1])
		return pp / 1e6, f, ok
	case rules.MetricUnaccountedMW:
		// No meter, no value: never 0 W, never a resolve.
		return d.UnaccountedW / 1e6, 0, d.HasMetered
	case rules.MetricUnaccountedRatio:
		return d.UnaccountedW / d.MeteredW, 0, d.HasMetered && d.MeteredW > 0
	case rules.MetricStaleMeters:
		return float64(d.MetersStale), 0, true
	case rules.MetricNodePowerMW:
		return d.NodePowerEstW / 1e6, 0, true
	case rules.MetricCoverage:
		return d.Coverage, 0, true
	case rules.MetricGPUTempMaxC:
		return float64(d.GPUTempMaxC), 0, d.HasGPUTemp()
	case rules.MetricMemTempMaxC:
		return float64(d.MemTempMaxC), 0, d.HasMemTemp()
	case rules.MetricThrottledGPUs:
		return float64(d.ThrottledGPUs), 0, true
	case rules.MetricStaleNodes:
		return float64(d.StaleNodes), 0, true
	case rules.MetricDegraded:
		if d.Degraded {
			return 1, 0, true
		}
		return 0, 0, true
	}
	return 0, 0, false
}

// Quality: GPU figures are degraded with the domain's coverage; facility
// figures when the domain's meters do not cover it or, without meters,
// when the node sum is at low coverage (aggregate's FacilityDegraded).
func (s source) Quality(id int, power string) rules.Quality {
	d := &s[id]
	q := rules.Quality{Coverage: d.Coverage, Degraded: d.Degraded, Figure: "GPU"}
	lowCov := fmt.Sprintf("only %.1f%% of nodes report; the figure is partly estimated (silent nodes at their last known power)", 100*d.Coverage)
	if power != rules.PowerFacility {
		if q.Degraded {
			q.Why = lowCov
		}
		return q
	}
	q.Degraded = d.FacilityDegraded
	switch {
	case d.HasMetered:
		q.Figure = "facility (metered)"
	case d.Meters > 0:
		q.Figure = "facility (node sum, meters stale)"
	default:
		q.Figure = "facility (node sum)"
	}
	if !q.Degraded {
		return q
	}
	if d.Meters > 0 && !d.HasMetered {
		q.Why = fmt.Sprintf("%d of %d meters stale: the facility figure is the node sum, not the meter", d.MetersStale, d.Meters)
		if d.Degraded {
			q.Why += ", and " + lowCov
		}
		return q
	}
	q.Why = "the facility figure is the node sum and " + lowCov
	return q
}
