package meters

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// BenchmarkSimWindow: one window of the simulated meters of the demo
// campus (6,400 nodes, its 42 row and hall meters), with its same-run baseline,
// the simulated collectors' own reports of the same nodes (Fleet.Report).
//
//	go test ./meters -run '^$' -bench SimWindow -benchtime 20x -count 3
func BenchmarkSimWindow(b *testing.B) {
	doc, err := os.ReadFile(filepath.Join("..", "configs", "demo-topology.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	topo, err := topology.Parse(doc, "demo-topology.yaml")
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MetricsAddr = ""
	start := time.Now().Truncate(time.Second)
	b.Run("meters", func(b *testing.B) {
		p, err := NewSim(cfg, topo, nil, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.ResetTimer()
		for i := range b.N {
			end := start.Add(time.Duration(i+1) * time.Second)
			for _, m := range p.meters {
				if _, err := m.r.(WindowReader).ReadWindow(ctx, end, time.Second); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(len(p.meters)), "meters")
	})
	b.Run("baseline-fleet-reports", func(b *testing.B) {
		locs := make([]telemetry.Location, topo.NumNodes())
		for i, n := range topo.Nodes() {
			locs[i] = n.Location
		}
		f, err := sim.NewFleet(cfg.Sim, locs)
		if err != nil {
			b.Fatal(err)
		}
		var r telemetry.NodeReport
		b.ResetTimer()
		for i := range b.N {
			end := start.Add(time.Duration(i+1) * time.Second)
			for n := range locs {
				f.Report(&r, n, end, time.Second, time.Second)
			}
		}
	})
}
