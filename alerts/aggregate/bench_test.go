package aggregate

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/internal/topology/topotest"
	"google.golang.org/protobuf/proto"
)

// synthReport is a realistic 8-GPU report (≈ the collector's steady-state
// size: no uuid/model) without running the simulator.
// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func synthReport(n *topology.Node, end time.Time, seed int) []byte {
	return synthReportNode(n, end, seed, false)
}

// synthReportNode is synthReport, with node_power_mw (Redfish) and
// cpu_power_mw when nodePower.
func synthReportNode(n *topology.Node, end time.Time, seed int, nodePower bool) []byte {
	r := &telemetry.NodeReport{Site: n.Location.Site, Hall: n.Location.Hall, Row: n.Location.Row, Rack: n.Location.Rack, Node: n.Name,
		WindowEndUnixNs: end.UnixNano(), WindowMs: 1000, SlotMs: 100, Seq: uint64(seed)}
	if nodePower {
		np, cpu := uint32(9_800_000+seed%1000), uint32(650_000)
		r.NodePowerMw, r.NodePowerSource, r.CpuPowerMw = &np, telemetry.NodePowerSource_NODE_POWER_REDFISH, &cpu
	}
	for s := range 10 {
		r.SlotPowerW = append(r.SlotPowerW, uint32(5000+(seed*7+s*131)%800))
	}
	for g := range 8 {
		p, pmin, pmax := uint32(650000+(seed+g)%5000), uint32(400000), uint32(700000)
		e := uint64(1e9 + seed)
		tc, mc, lim, clk, util, thr := int32(60+g), int32(70+g), uint32(700000), uint32(1980), uint32(97), uint64(0)
		r.Gpus = append(r.Gpus, &telemetry.Gpu{Index: uint32(g), PowerMw: &p, PowerMinMw: &pmin, PowerMaxMw: &pmax, EnergyMj: &e,
			TempC: &tc, MemTempC: &mc, PowerLimitMw: &lim, SmClockMhz: &clk, UtilPct: &util, ThrottleReasons: &thr})
	}
	b, _ := proto.Marshal(r)
	return b
}

func BenchmarkHandleReport(b *testing.B) {
	topo := bigTopo(b, 1, 4, 16) // 1152 nodes
	a, err := New(testConfig(), topo)
	if err != nil {
		b.Fatal(err)
	}
	end := testEpoch.Add(time.Second)
	var subj []string
	var data [][]byte
	for i, n := range topo.Nodes() {
		s, _ := telemetry.PowerSubject(n.Location)
		subj = append(subj, s)
		data = append(data, synthReport(n, end, i))
	}
	b.SetBytes(int64(len(data[0])))
	b.ReportAllocs()
	i := 0
	c0 := cpuTime()
	for b.Loop() {
		if err := a.HandleReport(subj[i], data[i]); err != nil {
			b.Fatal(err)
		}
		i++
		if i == len(data) {
			i = 0
		}
	}
	cpu := cpuTime() - c0
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu_ns/report")
}

// BenchmarkTick is one window at campus scale: every node fresh, every
// level summed, ramp/swing/FFT on every domain with a full 60 s window
// (GPU, and the facility ramp and swing; the facility spectrum only in the
// _facility-fft cases, as when facility oscillation rules look at every
// level). 1 GW ≈ 69k
// nodes, 5 GW ≈ 346k nodes (18 nodes per rack). The "metered" cases add
// every node's node_power_mw and cpu_power_mw and a fresh reading of every
// meter (2 PDUs per rack, a meter per row, a switchgear per hall); the
// others are their same-run baseline. fft=site,hall,row computes the
// spectra only there (the engine's shipped oscillation_levels) instead of
// on every domain.
func BenchmarkTick(b *testing.B) {
	type tc struct {
		name               string
		halls, rows, racks int
		metered            bool
		osc                []string
		facOsc             bool
	}
	var cases []tc
	for _, size := range []tc{{"nodes=69120_1GW", 4, 20, 48, false, nil, false}, {"nodes=345600_5GW", 10, 40, 48, false, nil, false}} {
		for _, osc := range [][]string{nil, {"site", "hall", "row"}} {
			for _, metered := range []bool{false, true} {
				c := size
				c.metered, c.osc = metered, osc
				if metered {
					c.name += "_metered"
				}
				if osc != nil {
					c.name += "_fft=site,hall,row"
				}
				cases = append(cases, c)
				if metered {
					c.facOsc = true
					c.name += "_facility-fft"
					cases = append(cases, c)
				}
			}
		}
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			topo := bigTopo(b, c.halls, c.rows, c.racks)
			if c.metered {
				topo = topotest.MeteredCampus(b, c.halls, c.rows, c.racks, 200)
			}
			cfg := testConfig()
			cfg.OscLevels = c.osc
			if c.facOsc {
				cfg.FacilityOscLevels, cfg.FacilityOscAll = c.osc, c.osc == nil
			}
			a, err := New(cfg, topo)
			if err != nil {
				b.Fatal(err)
			}
			// fill every ring slot with a report, and every domain's history
			proto0 := map[int][]byte{}
			for w := range a.ring {
				end := testEpoch.Add(time.Duration(w+1) * time.Second)
				for i, n := range topo.Nodes() {
					d, ok := proto0[i%97]
					if !ok || w == 0 {
						d = synthReportNode(n, end, i, c.metered)
					}
					s, _ := telemetry.PowerSubject(n.Location)
					if err := a.HandleReport(s, d); err != nil {
						b.Fatal(err)
					}
				}
			}
			for i := range a.ana.filled {
				a.ana.filled[i] = int32(a.ana.n)
				a.fana.filled[i] = int32(a.fana.n)
			}
			k := testEpoch.Add(time.Second).UnixNano() / a.windowNs
			a.lastTick = k - 1
			a.run = a.cfg.StaleAfter + 2 // past the analysis warm-up
			R := int64(a.ring)
			for _, m := range topo.Meters() { // through the real path once
				r := meterRep(b, topo, m.Name, time.Unix(0, k*a.windowNs), 40_000, 1000)
				if err := a.HandleMeter(r.subject, r.data); err != nil {
					b.Fatal(err)
				}
			}
			var cpu time.Duration
			b.ReportAllocs()
			for b.Loop() {
				c0 := cpuTime()
				for i := range topo.NumNodes() {
					a.rWin[i*a.ring+int(k%R)] = k
				}
				if m := a.meters; m != nil {
					for i := range m.meters {
						j := i*a.ring + int(k%R)
						m.win[j], m.fresh[j], m.w[j], m.hold[j] = k, true, 40_000, int64(a.cfg.StaleAfter)
					}
				}
				st := a.Tick(time.Unix(0, k*a.windowNs))
				if !st[0].HasOsc || st[0].NodesReporting != topo.NumNodes() || st[0].Facility.HasOsc != c.facOsc {
					b.Fatalf("site: osc %v reporting %d", st[0].HasOsc, st[0].NodesReporting)
				}
				if c.metered && (!st[0].HasMetered || st[0].MetersStale != 0 || st[0].NodesPowerMeasured != topo.NumNodes()) {
					b.Fatalf("site: metered %v stale %d measured %d", st[0].HasMetered, st[0].MetersStale, st[0].NodesPowerMeasured)
				}
				k++
				cpu += cpuTime() - c0
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu_ms/tick")
			b.ReportMetric(float64(topo.NumNodes()), "nodes")
			b.ReportMetric(float64(len(topo.Domains())), "domains")
			b.ReportMetric(float64(len(topo.Meters())), "meters")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/tick")
		})
	}
}

func ExampleAggregator_Tick() {
	topo, _ := topology.Parse([]byte(pduTopo), "example")
	a, _ := New(Config{Window: time.Second, Slot: 100 * time.Millisecond, StaleAfter: 3, AnalysisWindow: 60 * time.Second}, topo)
	st := a.Tick(time.Unix(1800000000, 0))
	site := st[topo.Sites()[0].ID]
	fmt.Printf("%s: %.0f W, %d/%d nodes, coverage %.2f\n", topo.Sites()[0].Key(), site.PowerW, site.NodesReporting, site.NodesExpected, site.Coverage)
	// Output: dc1: 0 W, 0/48 nodes, coverage 0.00
}

// BenchmarkProtoUnmarshalBaseline is the baseline for BenchmarkHandleReport:
// decoding the same report with the generated protobuf code alone (no
// lookup, no update).
func BenchmarkProtoUnmarshalBaseline(b *testing.B) {
	topo := bigTopo(b, 1, 1, 1)
	data := synthReport(topo.Nodes()[0], testEpoch.Add(time.Second), 1)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var r telemetry.NodeReport
	for b.Loop() {
		if err := proto.Unmarshal(data, &r); err != nil {
			b.Fatal(err)
		}
	}
}
