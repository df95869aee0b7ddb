package meters

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	polls       *prometheus.CounterVec   // meter, protocol
	errors      *prometheus.CounterVec   // meter, kind
	latency     *prometheus.HistogramVec // protocol
	lastLatency *prometheus.GaugeVec     // meter
	stale       *prometheus.GaugeVec     // meter
	staleRep    *prometheus.CounterVec   // meter, reason
	power       *prometheus.GaugeVec     // meter
	published   prometheus.Counter
	duplicates  prometheus.Counter
	pubErrors   prometheus.Counter
	meters      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_meters_polls_total",
			Help: "Meter reads attempted, by meter and protocol."}, []string{"meter", "protocol"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_meters_errors_total",
			Help: "Failed meter reads by meter and kind (timeout, connect, refused, auth, no_such_object, exception, decode, agent, protocol, other)."}, []string{"meter", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "megawatch_meters_poll_seconds",
			Help:    "Meter read latency by protocol.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2}}, []string{"protocol"}),
		lastLatency: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "megawatch_meters_last_poll_seconds",
			Help: "Latency of each meter's last read."}, []string{"meter"}),
		stale: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "megawatch_meters_stale",
			Help: "1 while a meter's last report was stale (no fresh reading)."}, []string{"meter"}),
		staleRep: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_meters_stale_reports_total",
			Help: "Stale reports published, by meter and reason (error, backoff, busy, overload)."}, []string{"meter", "reason"}),
		power: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "megawatch_meters_power_watts",
			Help: "Each meter's last fresh active power reading."}, []string{"meter"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_meters_reports_published_total",
			Help: "Meter reports stored by JetStream (duplicates excluded)."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_meters_reports_duplicate_total",
			Help: "Meter reports JetStream already had (another poller of the same meter published the window first)."}),
		pubErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_meters_publish_errors_total",
			Help: "Meter reports that could not be published (NATS unreachable, timeout)."}),
		meters: prometheus.NewGauge(prometheus.GaugeOpts{Name: "megawatch_meters_configured",
			Help: "Meters this poller reads."}),
	}
	if reg != nil {
		reg.MustRegister(m.polls, m.errors, m.latency, m.lastLatency, m.stale, m.staleRep, m.power, m.published, m.duplicates, m.pubErrors, m.meters)
	}
	return m
}

// meterMetrics are one meter's series, looked up once.
type meterMetrics struct {
	polls, published   prometheus.Counter
	latency            prometheus.Observer
	lastLatency, stale prometheus.Gauge
	power              prometheus.Gauge
	errors, staleRep   *prometheus.CounterVec // by kind, by reason
}

func (m *metrics) forMeter(name, protocol string) meterMetrics {
	l := prometheus.Labels{"meter": name}
	return meterMetrics{
		polls:       m.polls.WithLabelValues(name, protocol),
		latency:     m.latency.WithLabelValues(protocol),
		lastLatency: m.lastLatency.WithLabelValues(name),
		stale:       m.stale.WithLabelValues(name),
		power:       m.power.WithLabelValues(name),
		errors:      m.errors.MustCurryWith(l),
		staleRep:    m.staleRep.MustCurryWith(l),
	}
}
