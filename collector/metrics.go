package collector

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NVML call names (the "call" label of the per-call latency summary).
const (
	callPowerInstant = iota
	callPowerUsage
	callThrottle
	callEnergy
	callTemp
	callMemTemp
	callLimit
	callClock
	callUtil
	numCalls
)

var callNames = [numCalls]string{"power_instant", "power_usage", "clock_event_reasons", "energy", "temperature", "memory_temperature", "power_limit", "sm_clock", "utilization"}

// metrics are one collector's Prometheus metrics. Every series carries a
// constant node label, so several collectors (the demo) can share a registry.
type metrics struct {
	samples    prometheus.Counter
	nvmlErrors *prometheus.CounterVec
	nvmlCall   prometheus.Histogram   // every call, few buckets: the latency distribution
	nvmlByCall *prometheus.SummaryVec // sum and count per call: the mean of each
	windows    prometheus.Counter
	published  prometheus.Counter
	replayed   prometheus.Counter
	buffered   prometheus.Gauge
	dropped    prometheus.Counter
	publishErr prometheus.Counter
	publishLat prometheus.Histogram
	// Duplicate acks (publisher.duplicate) and the re-publishes they cause.
	dupAcks     *prometheus.CounterVec
	republished prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, node string) *metrics {
	cl := prometheus.Labels{"node": node}
	m := &metrics{
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_samples_total",
			Help: "Instantaneous GPU power samples read.", ConstLabels: cl}),
		nvmlErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_collector_nvml_errors_total",
			Help: "NVML errors by GPU and kind (lost, timeout, error); NOT_SUPPORTED is not counted.", ConstLabels: cl}, []string{"gpu", "kind"}),
		// Series count matters at 70k nodes per GW: a histogram per call
		// (9 × 16 series) was 60% of a collector's series, ≈ 10M per GW.
		// One histogram over all calls (10 series) shows the distribution
		// and the slow tail; a quantile-free summary per call (sum and
		// count, 18 series) gives each call's mean.
		nvmlCall: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "megawatch_collector_nvml_call_seconds",
			Help: "Latency of NVML calls, all calls together (per call: megawatch_collector_nvml_call_duration_seconds).", ConstLabels: cl,
			Buckets: []float64{50e-6, 250e-6, 1e-3, 5e-3, 25e-3, 0.1, 0.5}}),
		nvmlByCall: prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: "megawatch_collector_nvml_call_duration_seconds",
			Help: "Time spent in each NVML call (sum and count: rate(sum)/rate(count) is its mean latency).", ConstLabels: cl}, []string{"call"}),
		windows: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_windows_total",
			Help: "Windows summarised into reports.", ConstLabels: cl}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_reports_published_total",
			Help: "Reports acknowledged by JetStream.", ConstLabels: cl}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_reports_replayed_total",
			Help: "Reports acknowledged after waiting in the offline buffer.", ConstLabels: cl}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "megawatch_collector_reports_buffered",
			Help: "Reports waiting in the buffer, including those awaiting an ack.", ConstLabels: cl}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_reports_dropped_total",
			Help: "Oldest reports dropped because the buffer was full.", ConstLabels: cl}),
		publishErr: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_publish_errors_total",
			Help: "Publishes that failed or were not acknowledged in time (retried from the buffer).", ConstLabels: cl}),
		publishLat: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "megawatch_collector_publish_seconds",
			Help: "Time from publish to JetStream ack.", ConstLabels: cl,
			Buckets: []float64{250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1, 2.5, 5}}),
	}
	m.dupAcks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_collector_duplicate_acks_total",
		Help: "JetStream acks with Duplicate: true. kind=unexplained: for a report never published before (a forged Msg-Id from another publisher, a second collector for this node, or a clock step back); kind=retry: for a retried publish.", ConstLabels: cl}, []string{"kind"})
	m.republished = prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_collector_reports_republished_total",
		Help: "Reports re-published with a random Msg-Id suffix after a duplicate ack, so that the stream stores them.", ConstLabels: cl})
	if reg != nil {
		reg.MustRegister(m.dupAcks, m.republished)
		reg.MustRegister(m.samples, m.nvmlErrors, m.nvmlCall, m.nvmlByCall, m.windows, m.published, m.replayed,
			m.buffered, m.dropped, m.publishErr, m.publishLat)
	}
	return m
}

// gpuMetrics are the series of one GPU, resolved once so that sampling does
// not look labels up.
type gpuMetrics struct {
	samples                       prometheus.Counter
	errLost, errTimeout, errOther prometheus.Counter
	all                           prometheus.Observer
	calls                         [numCalls]prometheus.Observer
}

func (m *metrics) forGPU(i int) *gpuMetrics {
	gpu := strconv.Itoa(i)
	g := &gpuMetrics{
		samples:    m.samples,
		errLost:    m.nvmlErrors.WithLabelValues(gpu, "lost"),
		errTimeout: m.nvmlErrors.WithLabelValues(gpu, "timeout"),
		errOther:   m.nvmlErrors.WithLabelValues(gpu, "error"),
		all:        m.nvmlCall,
	}
	for c := range numCalls {
		g.calls[c] = m.nvmlByCall.WithLabelValues(callNames[c])
	}
	return g
}

func (g *gpuMetrics) call(c int, start time.Time) {
	d := time.Since(start).Seconds()
	g.all.Observe(d)
	g.calls[c].Observe(d)
}
