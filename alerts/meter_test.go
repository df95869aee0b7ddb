package alerts

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// meterTopo: one hall, one row with a busway meter, two racks of 4 nodes.
const meterTopo = `
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 2000
    children:
      - name: h1
        capacity_kw: 2000
        children:
          - name: r1
            capacity_kw: 1000
            meters:
              - {name: bus-r1, protocol: modbus, address: "127.0.0.1:1502", modbus: {power: {address: 0, type: f32}}}
            children:
              - name: k[1-2]
                capacity_kw: 500
                nodes: ["m-{row}-{rack}-n[1-4]"]
`

// meterRig is a real in-process NATS server, a topology with a meter and
// an engine under Run on the wall clock.
type meterRig struct {
	t       *testing.T
	nc      *nats.Conn
	js      jetstream.JetStream
	topo    *topology.Topology
	fleet   *sim.Fleet
	cfg     Config
	eng     *Engine
	reg     *prometheus.Registry
	rollups chan *telemetry.Rollup // row dc1/h1/r1
	stuck   time.Duration          // the engine's meterStuck (0: its default)
	cancel  func()
	done    chan error
}

func newMeterRig(t *testing.T) *meterRig {
	t.Helper()
	testenv.Short(t)
	topo, fl := meterTopoFleet(t)
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	r := &meterRig{t: t, nc: nc, js: js, topo: topo, fleet: fl, rollups: make(chan *telemetry.Rollup, 1000), reg: prometheus.NewRegistry()}
	r.cfg = DefaultConfig()
	r.cfg.NATS.Servers = []string{srv.URL()}
	r.cfg.HTTPAddr = ""
	r.cfg.Notifiers.Log.Enabled = false
	r.cfg.Rules = []rules.Rule{{Name: "row_meters_stale", Level: "row", Metric: rules.MetricStaleMeters, Threshold: f(0), Severity: "warning"}}
	sub, err := nc.Subscribe(telemetry.RollupPrefix+".row.dc1.h1.r1", func(m *nats.Msg) {
		var ru telemetry.Rollup
		if proto.Unmarshal(m.Data, &ru) == nil {
			r.rollups <- &ru
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return r
}

// run builds the engine (hook, when set, runs before each meter report is
// handled) and starts Run.
func (r *meterRig) run(hook func()) {
	r.t.Helper()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e, err := New(r.cfg, r.topo, r.nc, logger, r.reg)
	if err != nil {
		r.t.Fatal(err)
	}
	if !e.agg.HasMeters() {
		r.t.Fatal("the aggregator has no meters: the topology's meter bus-r1 is in scope")
	}
	e.meterHook, e.meterStuck = hook, r.stuck
	r.eng = e
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- e.Run(ctx) }()
	r.t.Cleanup(r.stop)
	waitFor(r.t, 10*time.Second, "the engine to run", func() bool { return e.ready.Load() })
}

func (r *meterRig) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Error(err)
		}
	case <-time.After(15 * time.Second):
		r.t.Error("Run did not stop")
	}
}

// nodes publishes every node's report for the window ending at end to the
// stream (stored when it returns).
func (r *meterRig) nodes(end time.Time) {
	r.t.Helper()
	var rep telemetry.NodeReport
	for i, n := range r.topo.Nodes() {
		r.fleet.Report(&rep, i, end, r.cfg.Window, r.cfg.Slot)
		b, err := proto.Marshal(&rep)
		if err != nil {
			r.t.Fatal(err)
		}
		subj, _ := telemetry.PowerSubject(n.Location)
		if _, err := r.js.Publish(context.Background(), subj, b); err != nil {
			r.t.Fatal(err)
		}
	}
}

// meter publishes bus-r1's fresh report for the window ending at end.
func (r *meterRig) meter(end time.Time, powerW float64) {
	r.t.Helper()
	rep := &telemetry.MeterReport{Meter: "bus-r1", Level: "row", Path: []string{"dc1", "h1", "r1"}, WindowEndUnixNs: end.UnixNano(),
		WindowMs: uint32(r.cfg.Window.Milliseconds()), PowerW: &powerW, Protocol: telemetry.MeterProtocol_METER_PROTOCOL_MODBUS, Seq: 1}
	b, err := proto.Marshal(rep)
	if err != nil {
		r.t.Fatal(err)
	}
	subj, err := telemetry.MeterSubject(rep.Path, rep.Meter)
	if err != nil {
		r.t.Fatal(err)
	}
	m := &nats.Msg{Subject: subj, Data: b, Header: nats.Header{telemetry.HeaderMsgID: {telemetry.MeterReportMsgID(rep)}}}
	if _, err := r.js.PublishMsg(context.Background(), m); err != nil {
		r.t.Fatal(err)
	}
}

// rollup waits for the row rollup of the window ending at end.
func (r *meterRig) rollup(end time.Time, within time.Duration) *telemetry.Rollup {
	r.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case ru := <-r.rollups:
			if ru.GetWindowEndUnixNs() == end.UnixNano() {
				return ru
			}
		case <-deadline:
			r.t.Fatalf("no row rollup for the window ending %s within %s", end.Format(time.RFC3339Nano), within)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			return metricValue(m)
		}
	}
	t.Fatalf("no metric %s %v", name, labels)
	return 0
}

func metricValue(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// A meter report stored before its window's deadline is in that window
// even when the meter input reads it late: here it is held back until the
// node input has every report of the window and the first of the next one
// (stored after the deadline) and would tick; the clock waits for the
// meter input instead, and the window's rollup carries the meter.
func TestMeterReportReadLateIsInItsWindow(t *testing.T) {
	r := newMeterRig(t)
	release := make(chan struct{})
	r.stuck = time.Minute // a loaded machine is slow, not stuck: never give up on the held meter input here
	// Reports are published after their window's end, as collectors and
	// meters do; a grace of 2 s leaves a loaded machine time to store them
	// all before the deadline.
	r.cfg.Grace = 2 * time.Second
	r.run(func() { <-release })
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)

	w, grace := r.cfg.Window, r.cfg.Grace
	end := time.Now().Truncate(w).Add(w)
	for time.Now().Before(end) {
		time.Sleep(10 * time.Millisecond) // wall clock to the window's end
	}
	const meteredW = 61_234.5
	r.meter(end, meteredW) // stored first, read last
	r.nodes(end)
	if time.Now().After(end.Add(grace)) {
		t.Fatal("the reports were not stored before their deadline (machine too slow for this test's 2 s grace)")
	}
	for time.Now().Before(end.Add(grace + 50*time.Millisecond)) {
		time.Sleep(10 * time.Millisecond) // the wall clock must pass the deadline: event time is what is tested
	}
	r.nodes(end.Add(w)) // stored after the deadline: the node input wants to tick
	// Wait until the node input has been handed everything (it holds the
	// first report of the next window, or has ticked), then let the meter
	// input go on.
	waitFor(t, 20*time.Second, "the node input to be handed every report", func() bool {
		info, err := r.eng.in.cons.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.Delivered.Stream >= uint64(2*r.topo.NumNodes())
	})
	unblock()
	ru := r.rollup(end, 10*time.Second)
	if ru.MeteredW == nil || ru.GetMeteredW() != meteredW || ru.GetFacilitySource() != telemetry.FacilitySource_FACILITY_SOURCE_METER ||
		ru.GetFacilityPowerW() != meteredW || ru.GetMetersStale() != 0 || ru.GetMeters() != 1 {
		t.Fatalf("window's rollup: metered %v (has %v) facility %v source %v meters %d stale %d; want the meter's %v W",
			ru.GetMeteredW(), (ru.MeteredW != nil), ru.GetFacilityPowerW(), ru.GetFacilitySource(), ru.GetMeters(), ru.GetMetersStale(), meteredW)
	}
	if ru.GetNodesReporting() != uint32(r.topo.NumNodes()) || ru.UnaccountedW == nil || ru.GetUnaccountedW() != meteredW-ru.GetNodePowerW() {
		t.Fatalf("rollup: %d nodes, unaccounted %v (has %v), node power %v", ru.GetNodesReporting(), ru.GetUnaccountedW(), (ru.UnaccountedW != nil), ru.GetNodePowerW())
	}
	if n := counter(t, r.reg, "megawatch_alerts_meter_reports_total", map[string]string{"result": "accepted"}); n != 1 {
		t.Errorf("meter reports accepted %v, want 1", n)
	}
	if n := counter(t, r.reg, "megawatch_alerts_meter_reports_total", map[string]string{"result": "late"}); n != 0 {
		t.Errorf("meter reports late %v, want 0", n)
	}
	if n := counter(t, r.reg, "megawatch_alerts_ticks_without_meters_total", nil); n != 0 {
		t.Errorf("%v ticks went ahead without the meter input", n)
	}
}

// An empty meter stream (no meters publishing) never holds a tick: every
// window is ticked, in order, with the meter stale (never 0 W); the meter
// input is there (caught up), so no tick counts as without it.
func TestEmptyMeterStreamTicks(t *testing.T) {
	r := newMeterRig(t)
	r.run(nil)
	ends := r.consecutive(5, 15*time.Second)
	for _, ru := range ends {
		if (ru.MeteredW != nil) || ru.GetMetersStale() != 1 || ru.GetFacilitySource() != telemetry.FacilitySource_FACILITY_SOURCE_NODE || !ru.GetFacilityDegraded() {
			t.Fatalf("rollup without meter reports: metered %v (has %v) stale %d source %v degraded %v",
				ru.GetMeteredW(), (ru.MeteredW != nil), ru.GetMetersStale(), ru.GetFacilitySource(), ru.GetFacilityDegraded())
		}
	}
	if n := counter(t, r.reg, "megawatch_alerts_ticks_without_meters_total", nil); n != 0 {
		t.Errorf("%v ticks went ahead without the (empty, caught-up) meter input", n)
	}
}

// A meter stream that cannot be set up (here another stream owns its
// subjects) neither stops the engine nor its ticks: every window is
// ticked, counted as without the meter input.
func TestMissingMeterStreamNeverStopsTicks(t *testing.T) {
	r := newMeterRig(t)
	if _, err := r.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{telemetry.MeterWildcard}}); err != nil {
		t.Fatal(err)
	}
	r.run(nil)
	if r.eng.min != nil || r.eng.meterErr == nil {
		t.Fatalf("meter input %v, stream error %v: want none and an error", r.eng.min, r.eng.meterErr)
	}
	got := r.consecutive(5, 15*time.Second)
	for _, ru := range got {
		if (ru.MeteredW != nil) || ru.GetMetersStale() != 1 {
			t.Fatalf("rollup: metered %v (has %v) stale %d", ru.GetMeteredW(), (ru.MeteredW != nil), ru.GetMetersStale())
		}
	}
	if n := counter(t, r.reg, "megawatch_alerts_ticks_without_meters_total", nil); n < 5 {
		t.Errorf("ticks without meters %v, want every tick (≥ 5)", n)
	}
}

// The meter stream deleted under a running engine: after a bounded wait
// the windows go on without it, every one in order.
func TestMeterStreamDeletedNeverStopsTicks(t *testing.T) {
	r := newMeterRig(t)
	r.run(nil)
	r.consecutive(2, 10*time.Second)
	if err := r.js.DeleteStream(context.Background(), telemetry.StreamMeter); err != nil {
		t.Fatal(err)
	}
	stuck := r.eng.meterStuckAfter()
	got := r.consecutive(int(2*stuck/r.cfg.Window)+3, 4*stuck+10*time.Second)
	last := got[len(got)-1].GetWindowEndUnixNs()
	if n := counter(t, r.reg, "megawatch_alerts_ticks_without_meters_total", nil); n < 1 {
		t.Errorf("ticks without meters %v after the stream was deleted (last window %d)", n, last)
	}
}

// consecutive collects n row rollups and checks that they are consecutive
// windows.
func (r *meterRig) consecutive(n int, within time.Duration) []*telemetry.Rollup {
	r.t.Helper()
	var got []*telemetry.Rollup
	deadline := time.After(within)
	for len(got) < n {
		select {
		case ru := <-r.rollups:
			if len(got) > 0 {
				if d := time.Duration(ru.GetWindowEndUnixNs() - got[len(got)-1].GetWindowEndUnixNs()); d != r.cfg.Window {
					r.t.Fatalf("window after %d ends %v later, want every %v window once", got[len(got)-1].GetWindowEndUnixNs(), d, r.cfg.Window)
				}
			}
			got = append(got, ru)
		case <-deadline:
			r.t.Fatalf("only %d of %d rollups within %s", len(got), n, within)
		}
	}
	return got
}

// meterTopoFleet parses meterTopo and simulates its nodes (seed 1).
func meterTopoFleet(t *testing.T) (*topology.Topology, *sim.Fleet) {
	t.Helper()
	topo, err := topology.Parse([]byte(meterTopo), "meter-topology")
	if err != nil {
		t.Fatal(err)
	}
	var locs []telemetry.Location
	for _, n := range topo.Nodes() {
		locs = append(locs, n.Location)
	}
	sc := sim.DefaultConfig()
	sc.Seed = 1
	fl, err := sim.NewFleet(sc, locs)
	if err != nil {
		t.Fatal(err)
	}
	return topo, fl
}
