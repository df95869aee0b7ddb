package alerts

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/alerts/web"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/internal/topology/topotest"
	"google.golang.org/protobuf/proto"
)

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// feedWindow hands every node's report for the window ending at end to the
// aggregator (outside the timed tick).
// With nodePower every report carries node power (as from a BMC).
func feedWindow(b *testing.B, e *Engine, topo *topology.Topology, end time.Time, subj []string, nodePower bool) {
	r := &telemetry.NodeReport{WindowEndUnixNs: end.UnixNano(), WindowMs: 1000, SlotMs: 100, SlotPowerW: make([]uint32, 10)}
	if nodePower {
		np := uint32(9_800_000)
		r.NodePowerMw, r.NodePowerSource = &np, telemetry.NodePowerSource_NODE_POWER_REDFISH
	}
	for g := range 8 {
		p, tc := uint32(650000+g), int32(60+g)
		r.Gpus = append(r.Gpus, &telemetry.Gpu{Index: uint32(g), PowerMw: &p, TempC: &tc, MemTempC: &tc})
	}
	var buf []byte
	for i, n := range topo.Nodes() {
		r.Site, r.Hall, r.Row, r.Rack, r.Node = n.Location.Site, n.Location.Hall, n.Location.Row, n.Location.Rack, n.Name
		for s := range r.SlotPowerW {
			r.SlotPowerW[s] = uint32(5200 + (i*7+s*131+int(end.Unix()))%400)
		}
		buf, _ = proto.MarshalOptions{}.MarshalAppend(buf[:0], r)
		if err := e.agg.HandleReport(subj[i], buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEngineTick is one full window at campus scale: sum every level,
// ramp/swing/FFT on every domain (full 60 s history), marshal and publish
// every rollup to NATS, and evaluate the shipped rules plus a rack rule.
// Run it with -cpu 1 for the one-core figure.
func BenchmarkEngineTick(b *testing.B) {
	for _, c := range []struct {
		name               string
		halls, rows, racks int
	}{{"nodes=69120_1GW", 4, 20, 48}, {"nodes=345600_5GW", 10, 40, 48}} {
		// all: the baseline, an FFT on every domain; default+meters: the
		// shipped levels with node power and a fresh reading of every meter
		// (its baseline is default).
		for _, fft := range []string{"default", "all", "default+meters"} {
			b.Run(c.name+"/fft="+fft, func(b *testing.B) {
				metered := fft == "default+meters"
				topo := topotest.Campus(b, c.halls, c.rows, c.racks, 250)
				if metered {
					topo = topotest.MeteredCampus(b, c.halls, c.rows, c.racks, 250)
				}
				srv := natstest.RunServer(b)
				nc := natstest.Connect(b, srv.URL())
				cfg := DefaultConfig()
				cfg.HTTPAddr = ""
				cfg.Notifiers.NATS.Enabled, cfg.Notifiers.Log.Enabled = false, false
				cfg.Rules = append(cfg.Rules, rules.Rule{Name: "rack_power_high", Level: "rack", Metric: rules.MetricPowerMW, OfCapacity: f(0.95), Severity: "warning"})
				if fft == "all" {
					cfg.OscillationLevels = nil
				}
				e, err := New(cfg, topo, nc, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				subj := make([]string, topo.NumNodes())
				for i, n := range topo.Nodes() {
					subj[i], _ = telemetry.PowerSubject(n.Location)
				}
				t0 := time.Unix(1800000000, 0)
				feed := func(end time.Time) {
					feedWindow(b, e, topo, end, subj, metered)
					if metered {
						feedMeters(b, e, topo, end)
					}
				}
				feed(t0)
				ctx := context.Background()
				// 60 windows of history after the analysis warm-up (nodes
				// held, then estimated) so that every domain runs its FFT in
				// every timed tick.
				warm := 60 + cfg.StaleAfter + 2
				for w := range warm {
					e.Tick(ctx, t0.Add(time.Duration(w)*time.Second))
				}
				w := warm
				var cpu time.Duration
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					end := t0.Add(time.Duration(w) * time.Second)
					feed(end)
					b.StartTimer()
					c0 := cpuTime()
					e.Tick(ctx, end)
					cpu += cpuTime() - c0
					w++
				}
				// CPU time of the process during the ticks: on a shared box the
				// wall time also counts other processes' use of the core.
				b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu_ms/tick")
				// Every timed tick ran the site's FFT: its analysis window is full
				// (a flat load has no oscillation peak, so no frequency).
				if s := e.Snapshot(); len(s.Sites) != 1 || s.Sites[0].NodesReporting != topo.NumNodes() ||
					len(e.agg.History(topo.Sites()[0].ID, nil)) != int(cfg.AnalysisWindow/cfg.Slot) {
					b.Fatalf("site %+v", s.Sites)
				}
				if metered && (e.agg.MeterStats().Accepted == 0 || s0(e).MeteredW == nil) {
					b.Fatalf("metered case without meters: %+v", e.agg.MeterStats())
				}
				b.ReportMetric(float64(e.eval.Instances()), "rule_instances")
				b.ReportMetric(float64(len(e.agg.Out())), "domains")
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/tick")
			})
		}
	}
}

// feedMeters hands a fresh reading of every meter to the aggregator.
func feedMeters(b *testing.B, e *Engine, topo *topology.Topology, end time.Time) {
	var buf []byte
	for i, m := range topo.Meters() {
		p := 90_000 + float64(i%100)
		r := &telemetry.MeterReport{Meter: m.Name, Level: m.Domain.Level, Path: m.Domain.Path, WindowEndUnixNs: end.UnixNano(), WindowMs: 1000, PowerW: &p}
		subj, err := telemetry.MeterSubject(m.Domain.Path, m.Name)
		if err != nil {
			b.Fatal(err)
		}
		buf, _ = proto.MarshalOptions{}.MarshalAppend(buf[:0], r)
		if err := e.agg.HandleMeter(subj, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// s0 is the first site of the live snapshot.
func s0(e *Engine) web.DomainView { return e.Snapshot().Sites[0] }
