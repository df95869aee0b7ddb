package notify

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DispatcherConfig sizes the per-notifier queues and retries.
type DispatcherConfig struct {
	QueueSize   int           `yaml:"queue_size"`   // batches per notifier; the oldest is dropped when full
	Timeout     time.Duration `yaml:"timeout"`      // per attempt
	MinBackoff  time.Duration `yaml:"min_backoff"`  // first retry wait
	MaxBackoff  time.Duration `yaml:"max_backoff"`  // cap of the exponential backoff
	MaxAttempts int           `yaml:"max_attempts"` // then the batch is dropped and logged
}

// DefaultDispatcherConfig: 1000 batches, 10 s per attempt, 0.5 s..30 s backoff, 12 attempts.
func DefaultDispatcherConfig() DispatcherConfig {
	return DispatcherConfig{QueueSize: 1000, Timeout: 10 * time.Second, MinBackoff: 500 * time.Millisecond, MaxBackoff: 30 * time.Second, MaxAttempts: 12}
}

// Dispatcher fans alerts out to notifiers. Send never blocks.
type Dispatcher struct {
	cfg     DispatcherConfig
	logger  *slog.Logger
	workers []*worker
	sent    *prometheus.CounterVec
	failed  *prometheus.CounterVec
	dropped *prometheus.CounterVec
}

type worker struct {
	n     Notifier
	mu    sync.Mutex
	queue [][]Alert
	wake  chan struct{}
}

// NewDispatcher registers its metrics on reg (may be nil).
func NewDispatcher(cfg DispatcherConfig, notifiers []Notifier, logger *slog.Logger, reg prometheus.Registerer) *Dispatcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 1
	}
	d := &Dispatcher{
		cfg:     cfg,
		logger:  logger,
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_alerts_notifications_total", Help: "Alert batches delivered, by notifier."}, []string{"notifier"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_alerts_notification_failures_total", Help: "Failed delivery attempts, by notifier."}, []string{"notifier"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "megawatch_alerts_notifications_dropped_total", Help: "Alert batches given up (queue full or attempts exhausted), by notifier."}, []string{"notifier"}),
	}
	if reg != nil {
		reg.MustRegister(d.sent, d.failed, d.dropped)
	}
	for _, n := range notifiers {
		d.workers = append(d.workers, &worker{n: n, wake: make(chan struct{}, 1)})
	}
	return d
}

// Send queues alerts for every notifier.
func (d *Dispatcher) Send(alerts []Alert) { d.enqueue(alerts, false) }

// Resend queues alerts for the notifiers that implement Resender only.
func (d *Dispatcher) Resend(alerts []Alert) { d.enqueue(alerts, true) }

// Resenders reports the smallest resend interval among the notifiers, 0 if none.
func (d *Dispatcher) ResendInterval() time.Duration {
	var iv time.Duration
	for _, w := range d.workers {
		if r, ok := w.n.(Resender); ok && (iv == 0 || r.ResendInterval() < iv) {
			iv = r.ResendInterval()
		}
	}
	return iv
}

func (d *Dispatcher) enqueue(alerts []Alert, resendOnly bool) {
	if len(alerts) == 0 {
		return
	}
	for _, w := range d.workers {
		if _, ok := w.n.(Resender); resendOnly && !ok {
			continue
		}
		w.mu.Lock()
		if len(w.queue) >= d.cfg.QueueSize {
			w.queue = w.queue[1:]
			d.dropped.WithLabelValues(w.n.Name()).Inc()
			d.logger.Warn("notification queue full, dropping oldest batch", "notifier", w.n.Name())
		}
		w.queue = append(w.queue, alerts)
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Pending is the number of queued batches over all notifiers.
func (d *Dispatcher) Pending() int {
	n := 0
	for _, w := range d.workers {
		w.mu.Lock()
		n += len(w.queue)
		w.mu.Unlock()
	}
	return n
}

// Run delivers until ctx ends, then makes one last attempt at what is queued,
// for at most a few seconds.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Go(func() { d.run(ctx, w) })
	}
	wg.Wait()
}

// drainFor bounds the last attempts at shutdown.
const drainFor = 5 * time.Second

func (d *Dispatcher) run(ctx context.Context, w *worker) {
	var drainUntil time.Time
	for {
		if ctx.Err() != nil {
			if drainUntil.IsZero() {
				drainUntil = time.Now().Add(drainFor)
			} else if time.Now().After(drainUntil) {
				w.mu.Lock()
				n := len(w.queue)
				w.queue = nil
				w.mu.Unlock()
				if n > 0 {
					d.dropped.WithLabelValues(w.n.Name()).Add(float64(n))
					d.logger.Error("shutting down: notifications not delivered", "notifier", w.n.Name(), "batches", n)
				}
				return
			}
		}
		w.mu.Lock()
		var batch []Alert
		if len(w.queue) > 0 {
			batch = w.queue[0]
			w.queue = w.queue[1:]
		}
		w.mu.Unlock()
		if batch == nil {
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			continue
		}
		d.deliver(ctx, w.n, batch)
	}
}

func (d *Dispatcher) deliver(ctx context.Context, n Notifier, batch []Alert) {
	backoff := d.cfg.MinBackoff
	for attempt := 1; ; attempt++ {
		// An attempt is bounded by its timeout, not cut by shutdown: a
		// notification in flight when the process stops still lands.
		actx := context.WithoutCancel(ctx)
		timeout := d.cfg.Timeout
		if ctx.Err() != nil {
			timeout = min(timeout, drainFor)
		}
		actx, cancel := context.WithTimeout(actx, timeout)
		retry, err := n.Notify(actx, batch)
		cancel()
		if err == nil {
			d.sent.WithLabelValues(n.Name()).Inc()
			return
		}
		d.failed.WithLabelValues(n.Name()).Inc()
		if !retry || attempt >= d.cfg.MaxAttempts || ctx.Err() != nil {
			d.dropped.WithLabelValues(n.Name()).Inc()
			d.logger.Error("notification failed, giving up", "notifier", n.Name(), "alerts", len(batch), "attempts", attempt, "err", err)
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if ra := retryAfter(err); ra > wait {
			wait = ra
		}
		d.logger.Warn("notification failed, retrying", "notifier", n.Name(), "attempt", attempt, "wait", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(backoff*2, d.cfg.MaxBackoff)
	}
}
