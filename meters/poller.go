package meters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters/modbus"
)

// Poller reads its meters once per window with a bounded worker pool and
// publishes their reports.
type Poller struct {
	cfg    Config
	js     jetstream.JetStream
	log    *slog.Logger
	m      *metrics
	meters []*meter
	shared []*modbus.Client
	poller string
	ready  atomic.Bool
	jobs   chan job
}

// meter is one meter's definition and poll state. The state is touched only
// by the worker that holds busy.
type meter struct {
	def     *topology.Meter
	subject string
	proto   telemetry.MeterProtocol
	protoS  string
	r       Reader
	timeout time.Duration
	busy    atomic.Bool
	seq     atomic.Uint64 // +1 per report
	mm      meterMetrics
	read    atomic.Int64 // unix ns of the last successful read

	// Touched only by the worker that holds busy.
	failures int
	nextTry  time.Time // window end from which it is read again
	lastErr  string
}

type job struct {
	m         *meter
	windowEnd time.Time
}

// New builds a poller for the meters of topo within cfg.Scope. Credentials
// are resolved here: a missing env var or file is an error naming the
// topology file and key.
func New(cfg Config, topo *topology.Topology, js jetstream.JetStream, logger *slog.Logger, reg prometheus.Registerer) (*Poller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	defs, err := scoped(cfg, topo, topo.Meters())
	if err != nil {
		return nil, err
	}
	rs, shared, err := readers(defs, cfg.Timeout)
	if err != nil {
		return nil, err
	}
	return newPoller(cfg, defs, rs, shared, js, logger, reg)
}

// scoped keeps the meters of defs within cfg.Scope.
func scoped(cfg Config, topo *topology.Topology, defs []*topology.Meter) ([]*topology.Meter, error) {
	if cfg.Scope != "" {
		d, err := topo.Scope(cfg.Scope)
		if err != nil {
			return nil, fmt.Errorf("scope: %w", err)
		}
		all := defs
		defs = nil
		for _, m := range all {
			if within(m.Domain, d) {
				defs = append(defs, m)
			}
		}
	}
	if len(defs) == 0 {
		return nil, fmt.Errorf("%s: no meters to poll (scope %q); define meters on the domains they measure (docs/meters.md)", topo.Source(), cfg.Scope)
	}
	return defs, nil
}

// newPoller builds a poller of defs read by rs (shared: device clients
// closed with the poller).
func newPoller(cfg Config, defs []*topology.Meter, rs map[*topology.Meter]Reader, shared []*modbus.Client,
	js jetstream.JetStream, logger *slog.Logger, reg prometheus.Registerer) (*Poller, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Poller{cfg: cfg, js: js, log: logger, m: newMetrics(reg), shared: shared, poller: cfg.PollerName(),
		jobs: make(chan job, len(defs))}
	for _, d := range defs {
		subj, err := telemetry.MeterSubject(d.Domain.Path, d.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", d.Source, d.Key, err)
		}
		to := cfg.Timeout
		if d.Timeout > 0 {
			to = min(d.Timeout, cfg.Interval-cfg.Interval/10)
		}
		pm := &meter{def: d, subject: subj, proto: protocolOf(d), protoS: d.Protocol, r: rs[d], timeout: to}
		pm.mm = p.m.forMeter(d.Name, d.Protocol)
		p.meters = append(p.meters, pm)
	}
	p.m.meters.Set(float64(len(p.meters)))
	return p, nil
}

func within(d, scope *topology.Domain) bool {
	for a := d; a != nil; a = a.Parent {
		if a == scope {
			return true
		}
	}
	return false
}

// Ready is nil once the stream is set up and the first window has been
// polled.
func (p *Poller) Ready() error {
	if !p.ready.Load() {
		return errors.New("meters: not polling yet")
	}
	return nil
}

// Meters is the number of meters this poller reads.
func (p *Poller) Meters() int { return len(p.meters) }

// Run polls every window until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	defer p.close()
	if p.cfg.EnsureStream {
		if err := p.ensureStream(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped before NATS was reachable
			}
			return err
		}
	}
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(context.Background()) // workers finish their current poll
	defer func() {
		close(p.jobs)
		wg.Wait()
		cancel()
	}()
	for range min(p.cfg.Workers, len(p.meters)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range p.jobs {
				p.poll(wctx, j)
			}
		}()
	}
	p.log.Info("meters polling", "meters", len(p.meters), "interval", p.cfg.Interval, "workers", min(p.cfg.Workers, len(p.meters)), "poller", p.poller)
	for {
		now := time.Now()
		next := now.Truncate(p.cfg.Interval).Add(p.cfg.Interval)
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		p.tick(wctx, next)
		p.ready.Store(true)
	}
}

// tick dispatches one window: every meter not still busy with an earlier
// window is queued; a busy one is reported stale for this window.
func (p *Poller) tick(ctx context.Context, windowEnd time.Time) {
	for _, m := range p.meters {
		if !m.busy.CompareAndSwap(false, true) {
			go p.publish(ctx, m.report(windowEnd, p, nil, "previous read still running"), m, "busy")
			continue
		}
		p.jobs <- job{m: m, windowEnd: windowEnd} // capacity len(meters): never blocks
	}
}

// poll reads one meter for one window and publishes the report.
func (p *Poller) poll(ctx context.Context, j job) {
	m := j.m
	defer m.busy.Store(false)
	if j.windowEnd.Before(m.nextTry) {
		p.publish(ctx, m.report(j.windowEnd, p, nil, fmt.Sprintf("backing off after %d failures: %s", m.failures, m.lastErr)), m, "backoff")
		return
	}
	// The read must end before the next window starts: a job that waited
	// for a worker too long (more meters than workers × interval / latency)
	// is reported stale rather than read late.
	start := time.Now()
	dl := start.Add(m.timeout)
	if next := j.windowEnd.Add(p.cfg.Interval); next.Before(dl) {
		dl = next
	}
	if dl.Sub(start) < m.timeout/10 {
		p.publish(ctx, m.report(j.windowEnd, p, nil, "overloaded: no worker was free before the window passed (raise workers)"), m, "overload")
		return
	}
	rctx, cancel := context.WithDeadline(ctx, dl)
	var rd Reading
	var err error
	if wr, ok := m.r.(WindowReader); ok {
		rd, err = wr.ReadWindow(rctx, j.windowEnd, p.cfg.Interval)
	} else {
		rd, err = m.r.Read(rctx)
	}
	lat := time.Since(start)
	cancel()
	m.mm.polls.Inc()
	m.mm.latency.Observe(lat.Seconds())
	m.mm.lastLatency.Set(lat.Seconds())
	if err != nil {
		kind := m.r.ErrorKind(err)
		m.mm.errors.WithLabelValues(kind).Inc()
		m.failures++
		m.lastErr = err.Error()
		delay := p.cfg.BackoffMax
		if m.failures <= 30 {
			delay = min(p.cfg.Interval<<(m.failures-1), p.cfg.BackoffMax)
		}
		m.nextTry = j.windowEnd.Add(delay)
		if m.failures == 1 || m.failures&(m.failures-1) == 0 { // log 1, 2, 4, 8 … failures
			p.log.Warn("meter read failed", "meter", m.def.Name, "address", m.def.Address, "kind", kind, "failures", m.failures, "retry_in", delay, "err", err)
		}
		p.publish(ctx, m.report(j.windowEnd, p, nil, m.lastErr), m, "error")
		return
	}
	if m.failures > 0 {
		p.log.Info("meter read again", "meter", m.def.Name, "after_failures", m.failures)
	}
	m.failures, m.nextTry, m.lastErr = 0, time.Time{}, ""
	m.read.Store(start.UnixNano())
	m.mm.power.Set(rd.PowerW)
	p.publish(ctx, m.report(j.windowEnd, p, &rd, ""), m, "")
}

// report is the MeterReport of one window: with a reading, or stale with
// the reason and no power (never 0 W).
func (m *meter) report(windowEnd time.Time, p *Poller, rd *Reading, errText string) *telemetry.MeterReport {
	r := &telemetry.MeterReport{
		Meter: m.def.Name, Level: m.def.Domain.Level, Path: m.def.Domain.Path,
		WindowEndUnixNs: windowEnd.UnixNano(), WindowMs: uint32(p.cfg.Interval.Milliseconds()),
		Phase: m.def.Phase, Feed: m.def.Feed, Protocol: m.proto, Seq: m.seq.Add(1),
		ReadUnixNs: m.read.Load(), Poller: p.poller, Version: p.cfg.Version,
	}
	if rd == nil {
		r.Stale, r.Error = true, truncate(errText, 300)
		return r
	}
	r.PowerW = proto.Float64(rd.PowerW)
	if rd.HasEnergy {
		r.EnergyWh = proto.Float64(rd.EnergyWh)
	}
	return r
}

// publish sends one report with its window's Msg-Id; JetStream keeps one
// fresh and one stale report per meter and window at most, however many
// pollers publish them.
func (p *Poller) publish(ctx context.Context, r *telemetry.MeterReport, m *meter, staleReason string) {
	if staleReason != "" {
		m.mm.stale.Set(1)
		m.mm.staleRep.WithLabelValues(staleReason).Inc()
	} else {
		m.mm.stale.Set(0)
	}
	data, err := proto.Marshal(r)
	if err != nil {
		p.m.pubErrors.Inc()
		return
	}
	msg := &nats.Msg{Subject: m.subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(telemetry.HeaderMsgID, telemetry.MeterReportMsgID(r))
	msg.Header.Set(telemetry.HeaderSchema, telemetry.SchemaVersion)
	pctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	ack, err := p.js.PublishMsg(pctx, msg)
	switch {
	case err != nil:
		p.m.pubErrors.Inc()
		p.log.Debug("meter report not published", "meter", r.Meter, "err", err)
	case ack.Duplicate:
		p.m.duplicates.Inc()
	default:
		p.m.published.Inc()
	}
}

func (p *Poller) ensureStream(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := natsx.EnsureStream(sctx, p.js, p.cfg.Streams.MeterStream())
		cancel()
		if err == nil {
			return nil
		}
		p.log.Warn("meter stream not ready, retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return fmt.Errorf("meters: %w (last: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (p *Poller) close() {
	for _, m := range p.meters {
		_ = m.r.Close()
	}
	for _, c := range p.shared {
		_ = c.Close()
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
