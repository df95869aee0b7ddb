package aggregate

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
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
	r := &telemetry.NodeReport{Site: n.Location.Site, Hall: n.Location.Hall, Row: n.Location.Row, Rack: n.Location.Rack, Node: n.Name,
		WindowEndUnixNs: end.UnixNano(), WindowMs: 1000, SlotMs: 100, Seq: uint64(seed)}
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
// level summed, ramp/swing/FFT on every domain with a full 60 s window.
// 1 GW ≈ 69k nodes, 5 GW ≈ 346k nodes (18 nodes per rack).
func BenchmarkTick(b *testing.B) {
	for _, c := range []struct {
		name               string
		halls, rows, racks int
	}{{"nodes=69120_1GW", 4, 20, 48}, {"nodes=345600_5GW", 10, 40, 48}} {
		b.Run(c.name, func(b *testing.B) {
			topo := bigTopo(b, c.halls, c.rows, c.racks)
			a, err := New(testConfig(), topo)
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
						d = synthReport(n, end, i)
					}
					s, _ := telemetry.PowerSubject(n.Location)
					if err := a.HandleReport(s, d); err != nil {
						b.Fatal(err)
					}
				}
			}
			for i := range a.ana.filled {
				a.ana.filled[i] = int32(a.ana.n)
			}
			k := testEpoch.Add(time.Second).UnixNano() / a.windowNs
			a.lastTick = k - 1
			a.run = a.cfg.StaleAfter + 2 // past the analysis warm-up
			R := int64(a.ring)
			var cpu time.Duration
			b.ReportAllocs()
			for b.Loop() {
				c0 := cpuTime()
				for i := range topo.NumNodes() {
					a.rWin[i*a.ring+int(k%R)] = k
				}
				st := a.Tick(time.Unix(0, k*a.windowNs))
				if !st[0].HasOsc || st[0].NodesReporting != topo.NumNodes() {
					b.Fatalf("site: osc %v reporting %d", st[0].HasOsc, st[0].NodesReporting)
				}
				k++
				cpu += cpuTime() - c0
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu_ms/tick")
			b.ReportMetric(float64(topo.NumNodes()), "nodes")
			b.ReportMetric(float64(len(topo.Domains())), "domains")
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
