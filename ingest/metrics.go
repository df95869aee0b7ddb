package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	consumed   *prometheus.CounterVec // stream
	points     *prometheus.CounterVec // target
	batches    *prometheus.CounterVec // target
	latency    *prometheus.HistogramVec
	retries    *prometheus.CounterVec // target
	deadLetter *prometheus.CounterVec // reason
	pending    *prometheus.GaugeVec   // consumer
	ackPending *prometheus.GaugeVec   // consumer
	inflight   prometheus.Gauge
	requests   *prometheus.CounterVec // target
	// conflicts: remembered field type conflicts; conflictLines: lines
	// routed to the dead-letter stream for one.
	conflicts     *prometheus.GaugeVec   // target, measurement, field
	conflictLines *prometheus.CounterVec // target, measurement, field
	stopNaked     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_messages_total",
			Help: "Messages consumed from JetStream, by stream."}, []string{"stream"}),
		points: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_points_written_total",
			Help: "Points InfluxDB accepted, by target."}, []string{"target"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_batches_total",
			Help: "Batches InfluxDB accepted, by target."}, []string{"target"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "megawatch_ingest_write_seconds",
			Help:    "Latency of one write request, by target.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14)}, []string{"target"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_write_retries_total",
			Help: "Failed writes that will be retried, by target."}, []string{"target"}),
		deadLetter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_deadletter_total",
			Help: "Messages dead-lettered, by reason."}, []string{"reason"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "megawatch_ingest_consumer_pending",
			Help: "Messages in the stream not yet delivered to the durable consumer."}, []string{"consumer"}),
		ackPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "megawatch_ingest_consumer_ack_pending",
			Help: "Messages delivered and not yet acked."}, []string{"consumer"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "megawatch_ingest_inflight_bytes",
			Help: "Message bytes held in batches by this process."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_write_requests_total",
			Help: "Write requests sent to InfluxDB (accepted or not), by target."}, []string{"target"}),
		conflicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "megawatch_ingest_field_conflicts",
			Help: "Field type conflicts ingest remembers (their lines are dead-lettered), by target, measurement and field."}, []string{"target", "measurement", "field"}),
		conflictLines: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_ingest_conflict_lines_total",
			Help: "Lines dead-lettered for a field type conflict, by target, measurement and field."}, []string{"target", "measurement", "field"}),
		stopNaked: prometheus.NewCounter(prometheus.CounterOpts{Name: "megawatch_ingest_stop_naked_total",
			Help: "Messages NAKed at shutdown for immediate redelivery."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.consumed, m.points, m.batches, m.latency, m.retries, m.deadLetter, m.pending, m.ackPending, m.inflight, m.requests, m.conflicts, m.conflictLines, m.stopNaked} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range DeadLetterReasons() {
		m.deadLetter.WithLabelValues(r)
	}
	return m, nil
}
