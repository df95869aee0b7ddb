package nodepower

import (
	"strings"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node-power series of one collector (constant node label).
type metrics struct {
	reads   *prometheus.CounterVec
	errors  *prometheus.CounterVec
	latency *prometheus.HistogramVec
	windows *prometheus.CounterVec
	byKind  map[telemetry.NodePowerSource]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, node string) *metrics {
	cl := prometheus.Labels{"node": node}
	m := &metrics{
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_collector_node_power_reads_total",
			Help: "Successful node-power reads by source.", ConstLabels: cl}, []string{"source"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_collector_node_power_errors_total",
			Help: "Failed node-power reads by source and kind (timeout, busy: 503/429, error).", ConstLabels: cl}, []string{"source", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "megawatch_collector_node_power_read_seconds",
			Help: "Latency of node-power reads.", ConstLabels: cl,
			Buckets: []float64{25e-6, 100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 0.1, 0.25, 0.5, 1, 2.5}}, []string{"source"}),
		windows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_collector_node_power_windows_total",
			Help: "Reports by the source of their node power (none: absent).", ConstLabels: cl}, []string{"source"}),
		byKind: map[telemetry.NodePowerSource]prometheus.Counter{},
	}
	for v, name := range telemetry.NodePowerSource_name {
		k := telemetry.NodePowerSource(v)
		m.byKind[k] = m.windows.WithLabelValues(strings.ToLower(strings.TrimPrefix(name, "NODE_POWER_")))
	}
	if reg != nil {
		reg.MustRegister(m.reads, m.errors, m.latency, m.windows)
	}
	return m
}

type sourceMetrics struct {
	reads                         prometheus.Counter
	errTimeout, errBusy, errOther prometheus.Counter
	latency                       prometheus.Observer
}

func (m *metrics) forSource(name string) *sourceMetrics {
	return &sourceMetrics{
		reads:      m.reads.WithLabelValues(name),
		errTimeout: m.errors.WithLabelValues(name, "timeout"),
		errBusy:    m.errors.WithLabelValues(name, "busy"),
		errOther:   m.errors.WithLabelValues(name, "error"),
		latency:    m.latency.WithLabelValues(name),
	}
}

func (m *metrics) window(r Result) {
	k := telemetry.NodePowerSource_NODE_POWER_NONE
	if r.HasPower {
		k = r.Source
	}
	if c, ok := m.byKind[k]; ok {
		c.Inc()
	}
}
