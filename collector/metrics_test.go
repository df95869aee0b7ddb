package collector

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// seriesCount gathers reg and counts the series it exports per family (a
// histogram: buckets + _sum + _count; a summary: quantiles + _sum + _count).
func seriesCount(t *testing.T, reg *prometheus.Registry) (map[string]int, int) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	per, total := map[string]int{}, 0
	for _, mf := range mfs {
		n := 0
		for _, m := range mf.Metric {
			switch {
			case m.Histogram != nil:
				n += len(m.Histogram.Bucket) + 1 + 2 // + Inf, sum, count
			case m.Summary != nil:
				n += len(m.Summary.Quantile) + 2
			default:
				n++
			}
		}
		per[mf.GetName()] = n
		total += n
	}
	return per, total
}

// TestMetricSeriesPerCollector counts the series one 8-GPU collector
// exports (its own metrics, not the Go runtime's) once every NVML call has
// run on every GPU: at 70k nodes per GW each series costs 70k in
// Prometheus. The NVML latency metrics are 28 series (a histogram over all
// calls and a per-call sum/count), not the 144 of a histogram per call.
func TestMetricSeriesPerCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg, "n1")
	for i := range 8 {
		g := m.forGPU(i)
		for c := range numCalls {
			g.call(c, time.Now())
		}
	}
	m.publishLat.Observe(0.001)
	per, total := seriesCount(t, reg)
	t.Logf("series per collector (own metrics): %d; %v", total, per)
	if n := per["megawatch_collector_nvml_call_seconds"] + per["megawatch_collector_nvml_call_duration_seconds"]; n != 10+2*numCalls {
		t.Errorf("NVML latency: %d series, want %d", n, 10+2*numCalls)
	}
	if total > 100 {
		t.Errorf("%d series per collector: ≈ %.1fM per GW (70k nodes); keep it under 100", total, float64(total)*70e3/1e6)
	}
}
