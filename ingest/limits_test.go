package ingest

import (
	"context"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology/topotest"
)

// TestServerLimits: InfluxDB 1.8's defaults are read from the server, a
// 1.5 GW campus (≈ 104k nodes) is warned about on both limits with the
// setting to change, and the embedded topology is not.
func TestServerLimits(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	cfg := testConfig(influx.URL, "mw")
	l, err := ServerLimits(context.Background(), cfg.Targets[0], cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Known || l.MaxSeriesPerDatabase != 1_000_000 || l.MaxValuesPerTag != 100_000 || !strings.HasPrefix(l.Version, "1.8") {
		t.Fatalf("limits %+v", l)
	}
	big := ExpectedSeries(topotest.Campus(t, 8, 20, 40, 200), 8) // 8 halls × 20 rows × 40 racks × 18 nodes ≈ 1.6 GW
	if big.Nodes < 100_000 {
		t.Fatalf("campus of %d nodes; the test wants more than 100k", big.Nodes)
	}
	w := l.Warnings(big, "t")
	if len(w) != 2 || !strings.Contains(w[0], "max-values-per-tag = 0") || !strings.Contains(w[1], "max-series-per-database = 0") || !strings.Contains(w[1], "tsi1") {
		t.Errorf("warnings for %d nodes: %q", big.Nodes, w)
	}
	topo, err := configs.LoadTopology("")
	if err != nil {
		t.Fatal(err)
	}
	if w := l.Warnings(ExpectedSeries(topo, 8), "t"); len(w) != 0 {
		t.Errorf("warnings for the example topology: %q", w)
	}
	if w := (Limits{Known: true}).Warnings(big, "t"); len(w) != 0 {
		t.Errorf("warnings with unlimited settings: %q", w)
	}
}
