package alerts

import (
	"fmt"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Process-level alerts of every replica (not tied to a power domain).
const (
	// HeartbeatRule always fires while the replica runs, is connected to
	// NATS and ticks: like Prometheus' Watchdog, route it to a dead man's
	// switch, whose page is its absence.
	HeartbeatRule = "megawatch_heartbeat"
	// LagRule fires while the aggregator is more than lag_alert_after
	// behind its input.
	LagRule = "megawatch_aggregator_lag"
)

// watchState is the heartbeat and lag alert of Run's goroutine.
type watchState struct {
	lastBeat   time.Time
	lagFiring  bool
	lagSince   time.Time
	lagWorstNs int64
}

// watchdog fires or resolves the lag alert, and — right after a tick
// (ticked) with NATS connected — re-sends the heartbeat (and the firing lag
// alert) every resend interval.
func (e *Engine) watchdog(now time.Time, ticked bool) {
	w := &e.watch
	lag := time.Duration(e.lagNs.Load())
	after := e.cfg.LagAlertAfter
	switch {
	case after > 0 && !w.lagFiring && lag > after:
		w.lagFiring, w.lagSince, w.lagWorstNs = true, now, int64(lag)
		e.logger.Warn("aggregator lags behind its input", "lag", lag.Round(time.Millisecond), "replica", e.replica)
		e.disp.Send([]notify.Alert{e.lagAlert(now, lag)})
		e.m.changes.WithLabelValues(LagRule, notify.StateFiring).Inc()
	case w.lagFiring && ticked && lag < after/2:
		w.lagFiring = false
		a := e.lagAlert(now, lag)
		a.State, a.EndsAt = notify.StateResolved, now
		e.logger.Info("aggregator caught up", "lag", lag.Round(time.Millisecond), "replica", e.replica)
		e.disp.Send([]notify.Alert{a})
		e.m.changes.WithLabelValues(LagRule, notify.StateResolved).Inc()
	}
	if w.lagFiring {
		w.lagWorstNs = max(w.lagWorstNs, int64(lag))
	}
	iv := e.disp.ResendInterval()
	if !ticked || iv <= 0 || now.Sub(w.lastBeat) < iv || e.nc == nil || !e.nc.IsConnected() {
		return
	}
	w.lastBeat = now
	beat := []notify.Alert{e.heartbeat(now)}
	if w.lagFiring {
		beat = append(beat, e.lagAlert(now, lag))
	}
	e.disp.Resend(beat)
}

func (e *Engine) processAlert(rule, severity string, now time.Time) notify.Alert {
	return notify.Alert{Rule: rule, Severity: severity, Level: "process", Domain: e.replica, State: notify.StateFiring,
		Labels: map[string]string{"replica": e.replica, "team": "telemetry"}, StartsAt: e.started, At: now,
		Fingerprint: rules.Fingerprint(rule, e.replica), Unit: "s"}
}

func (e *Engine) heartbeat(now time.Time) notify.Alert {
	a := e.processAlert(HeartbeatRule, "none", now)
	a.Annotations = map[string]string{
		"summary": fmt.Sprintf("megawatch alerts replica %s is running, connected to NATS and evaluating every window", e.replica),
		"description": "This alert always fires while the replica is healthy and is re-sent every resend interval. " +
			"Route it to a dead man's switch: when it stops (the process died, lost NATS, or stopped ticking), page.",
	}
	return a
}

func (e *Engine) lagAlert(now time.Time, lag time.Duration) notify.Alert {
	a := e.processAlert(LagRule, "warning", now)
	a.StartsAt = e.watch.lagSince
	a.Metric, a.Value, a.Threshold = "lag_seconds", lag.Seconds(), e.cfg.LagAlertAfter.Seconds()
	a.Annotations = map[string]string{
		"summary": fmt.Sprintf("megawatch alerts replica %s is %.1f s behind its input (threshold %s)", e.replica, lag.Seconds(), e.cfg.LagAlertAfter),
		"description": "The aggregator reads reports slower than they arrive (CPU starved, paused, or too many nodes for one process). " +
			"No report is lost — they wait in the stream and every window is computed in order — but pages and resolves come that much later. " +
			"Give it CPU, or split it per hall (--scope).",
	}
	return a
}

// readGauge is a gauge's current value.
func readGauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil || m.Gauge == nil {
		return 0
	}
	return m.GetGauge().GetValue()
}
