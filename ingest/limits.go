package ingest

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/megawatch/megawatch/internal/topology"
)

// Scale limits. InfluxDB 1.8 refuses new series beyond
// max-series-per-database (default 1,000,000) and new tag values beyond
// max-values-per-tag (default 100,000) per tag key: at 8 GPUs per node one
// database holds ≈ 9 series per node (8 gpu + 1 node), and the node tag has
// one value per node, so the defaults cap a database near 1.4–1.6 GW
// (≈ 69k nodes per GW). docs/ingest.md ("Scale limits") gives the settings.

// Expected is the series a topology writes into one InfluxDB database.
type Expected struct {
	Nodes, GPUsPerNode, Domains int
	// Series per measurement: gpu = nodes × GPUs, node = nodes, rollup =
	// domains (one series per domain), meter = 2 per meter (its fresh and
	// its stale reports).
	GPUSeries, NodeSeries, RollupSeries, MeterSeries int
	// NodeTagValues is the number of values of the node tag key.
	NodeTagValues int
}

// Total is the series of all measurements.
func (e Expected) Total() int { return e.GPUSeries + e.NodeSeries + e.RollupSeries + e.MeterSeries }

// ExpectedSeries is what topo writes with gpusPerNode GPUs per node.
func ExpectedSeries(topo *topology.Topology, gpusPerNode int) Expected {
	n := topo.NumNodes()
	return Expected{Nodes: n, GPUsPerNode: gpusPerNode, Domains: len(topo.Domains()),
		GPUSeries: n * gpusPerNode, NodeSeries: n, RollupSeries: len(topo.Domains()), MeterSeries: 2 * len(topo.Meters()), NodeTagValues: n}
}

// Limits are an InfluxDB 1.x server's series limits (0 = unlimited).
type Limits struct {
	Version              string
	MaxSeriesPerDatabase int64
	MaxValuesPerTag      int64
	Known                bool // false: the server does not say (2.x/3.x, or no permission)
}

// ServerLimits reads t's server version and, on 1.x, its limits (SHOW
// DIAGNOSTICS, config-data).
func ServerLimits(ctx context.Context, t Target, cfg Config) (Limits, error) {
	tg, err := newTarget(t, cfg)
	if err != nil {
		return Limits{}, err
	}
	defer tg.sink.close()
	s, ok := tg.sink.(*influxSink)
	if !ok {
		return Limits{}, fmt.Errorf("target %s: not an InfluxDB target", t.Name)
	}
	return s.limits(ctx)
}

func (s *influxSink) limits(ctx context.Context) (Limits, error) {
	v, err := s.version(ctx)
	if err != nil {
		return Limits{}, err
	}
	l := Limits{Version: v}
	if !strings.HasPrefix(v, "1.") {
		return l, nil
	}
	cols, vals, err := s.diagnostics(ctx, "config-data")
	if err != nil {
		return l, err
	}
	for i, c := range cols {
		if i >= len(vals) {
			break
		}
		n, err := strconv.ParseInt(vals[i], 10, 64)
		if err != nil {
			continue
		}
		switch c {
		case "max-series-per-database":
			l.MaxSeriesPerDatabase, l.Known = n, true
		case "max-values-per-tag":
			l.MaxValuesPerTag, l.Known = n, true
		}
	}
	return l, nil
}

// diagnostics returns the columns and first row of one SHOW DIAGNOSTICS series.
func (s *influxSink) diagnostics(ctx context.Context, name string) ([]string, []string, error) {
	series, err := s.influxQLSeries(ctx, "SHOW DIAGNOSTICS")
	if err != nil {
		return nil, nil, err
	}
	for _, se := range series {
		if se.name == name && len(se.rows) > 0 {
			return se.columns, se.rows[0], nil
		}
	}
	return nil, nil, fmt.Errorf("SHOW DIAGNOSTICS: no %s", name)
}

// Warnings compares what is expected with the limits; every warning says
// what to set.
func (l Limits) Warnings(e Expected, target string) []string {
	var out []string
	if !l.Known {
		return nil
	}
	if l.MaxValuesPerTag > 0 && int64(e.NodeTagValues) > l.MaxValuesPerTag*9/10 {
		out = append(out, fmt.Sprintf("target %s: %d nodes are %d values of the node tag; the server's max-values-per-tag is %d: set max-values-per-tag = 0 in influxd's [data] (or split halls over targets)",
			target, e.Nodes, e.NodeTagValues, l.MaxValuesPerTag))
	}
	if l.MaxSeriesPerDatabase > 0 && int64(e.Total()) > l.MaxSeriesPerDatabase*9/10 {
		out = append(out, fmt.Sprintf("target %s: the topology writes ≈ %d series (gpu %d, node %d, rollup %d, meter %d); the server's max-series-per-database is %d: set max-series-per-database = 0 with index-version = \"tsi1\" (or split halls over targets)",
			target, e.Total(), e.GPUSeries, e.NodeSeries, e.RollupSeries, e.MeterSeries, l.MaxSeriesPerDatabase))
	}
	return out
}

type influxSeries struct {
	name    string
	columns []string
	rows    [][]string
}

// influxQLSeries runs q (GET) and returns every series of its first result.
func (s *influxSink) influxQLSeries(ctx context.Context, q string) ([]influxSeries, error) {
	out, err := s.influxQLRaw(ctx, http.MethodGet, "", q)
	if err != nil {
		return nil, err
	}
	var series []influxSeries
	for _, r := range out.Results {
		for _, se := range r.Series {
			is := influxSeries{name: se.Name, columns: se.Columns}
			for _, v := range se.Values {
				row := make([]string, len(v))
				for i, x := range v {
					row[i] = fmt.Sprint(x)
				}
				is.rows = append(is.rows, row)
			}
			series = append(series, is)
		}
	}
	return series, nil
}
