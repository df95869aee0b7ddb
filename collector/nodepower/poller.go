package nodepower

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// ringLen is how many readings a source keeps: enough for max_age at any
// interval (readings are at least one window apart).
const ringLen = 8

// Poller polls the configured sources and answers, without blocking on
// any of them, what a window's node figure is.
type Poller struct {
	window time.Duration
	order  []choice // node-power sources in order of preference
	polled []*polled
	cpu    *polled
	model  *Model
	m      *metrics
	logger *slog.Logger
	now    func() time.Time
}

// choice is one entry of the preference order: a polled source or the model.
type choice struct {
	p     *polled
	model bool
}

// Option changes a Poller.
type Option func(*Poller)

// WithSource puts src first in the preference order, polled like the
// Redfish source (the simulator's BMC; tests).
func WithSource(src Source, pc PollConfig) Option {
	return func(p *Poller) {
		pl := p.newPolled(src, pc)
		p.order = append([]choice{{p: pl}}, p.order...)
	}
}

// New builds the sources of cfg (validated against window) for node; the
// metrics go on reg (nil: none). It opens no connection: Run polls.
func New(cfg Config, window time.Duration, node string, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Poller, error) {
	if err := cfg.Validate("node_power", window); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Poller{window: window, m: newMetrics(reg, node), logger: logger, now: time.Now}
	for _, name := range cfg.Sources {
		switch name {
		case SourceRedfish:
			rf, err := NewRedfish(cfg.Redfish)
			if err != nil {
				return nil, err
			}
			p.order = append(p.order, choice{p: p.newPolled(rf, cfg.Redfish.PollConfig)})
		case SourceHwmon:
			p.order = append(p.order, choice{p: p.newPolled(NewHwmon(cfg.Hwmon.SysfsRoot), cfg.Hwmon.PollConfig)})
		case SourceModel:
			p.model = NewModel(cfg.Model)
			p.order = append(p.order, choice{model: true})
		}
	}
	if cfg.RAPL.Enabled {
		p.cpu = p.newPolled(NewRAPL(cfg.RAPL.SysfsRoot, p.now), cfg.RAPL.PollConfig)
	}
	for _, o := range opts {
		o(p)
	}
	return p, nil
}

// Enabled reports whether the poller has anything to report.
func (p *Poller) Enabled() bool { return len(p.order) > 0 || p.cpu != nil }

// Sources lists the preference order and the CPU component, for the log.
func (p *Poller) Sources() string {
	var s []string
	for _, c := range p.order {
		if c.model {
			s = append(s, SourceModel)
		} else {
			s = append(s, c.p.src.Name())
		}
	}
	if p.cpu != nil {
		s = append(s, "cpu:"+p.cpu.src.Name())
	}
	return strings.Join(s, ",")
}

func (p *Poller) newPolled(src Source, pc PollConfig) *polled {
	pl := &polled{src: src, interval: pc.interval(p.window), timeout: pc.Timeout,
		maxAge: pc.maxAge(p.window), maxBackoff: max(pc.MaxBackoff, pc.interval(p.window)), m: p.m.forSource(src.Name())}
	if pl.timeout <= 0 || pl.timeout >= pl.interval {
		pl.timeout = pl.interval * 9 / 10
	}
	p.polled = append(p.polled, pl)
	return pl
}

// Run polls every source in its own goroutine until ctx ends, and waits
// for them (a read in flight ends at its timeout).
func (p *Poller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, pl := range p.polled {
		wg.Go(func() { pl.loop(ctx, p.now, p.logger) })
	}
	wg.Wait()
}

// Window is the node figure for the window ending at endNs (Unix ns): the
// first source in order with a fresh reading (or the model), the CPU
// component when fresh. It only reads the cached readings.
func (p *Poller) Window(endNs int64, g GPUs) Result {
	var r Result
	for _, c := range p.order {
		if c.model {
			if mw, ok := p.model.Estimate(g); ok {
				r.PowerMW, r.HasPower, r.Source = mw, true, telemetry.NodePowerSource_NODE_POWER_MODEL
				break
			}
			continue
		}
		if w, e, hasE, ok := c.p.mean(endNs, p.window); ok {
			r.PowerMW, r.HasPower, r.Source = telemetry.WToMilliwatts(w), true, c.p.src.Kind()
			r.EnergyMJ, r.HasEnergy = e, hasE
			break
		}
	}
	if p.cpu != nil {
		if w, _, _, ok := p.cpu.mean(endNs, p.window); ok {
			r.CPUMW, r.HasCPU = telemetry.WToMilliwatts(w), true
		}
	}
	p.m.window(r)
	return r
}

// polled is one source with its polling state and its readings.
type polled struct {
	src                                   Source
	interval, timeout, maxAge, maxBackoff time.Duration
	m                                     *sourceMetrics

	mu   sync.Mutex
	ring [ringLen]reading
	next int
}

type reading struct {
	at int64 // Unix ns the read returned
	s  Sample
	ok bool
}

func (pl *polled) store(at time.Time, s Sample) {
	pl.mu.Lock()
	pl.ring[pl.next] = reading{at: at.UnixNano(), s: s, ok: true}
	pl.next = (pl.next + 1) % ringLen
	pl.mu.Unlock()
}

// mean is the source's figure for the window ending at endNs: the mean of
// the readings taken in it, (endNs − window, endNs]; without one, the latest
// reading taken within max_age before endNs (a source polled slower than
// the window). The energy counter is the latest among the readings used.
func (pl *polled) mean(endNs int64, window time.Duration) (w float64, energy uint64, hasEnergy, ok bool) {
	from := endNs - int64(window)
	oldest := endNs - int64(max(window, pl.maxAge))
	var sum float64
	var n int
	var latest, latestE int64
	var last *reading
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for i := range pl.ring {
		rd := &pl.ring[i]
		if !rd.ok || rd.at <= oldest || rd.at > endNs {
			continue
		}
		if last == nil || rd.at > latest {
			last, latest = rd, rd.at
		}
		if rd.at <= from {
			continue
		}
		sum += rd.s.PowerW
		n++
		if rd.s.HasEnergy && rd.at >= latestE {
			latestE, energy, hasEnergy = rd.at, rd.s.EnergyMJ, true
		}
	}
	switch {
	case n > 0:
		return sum / float64(n), energy, hasEnergy, true
	case last != nil:
		return last.s.PowerW, last.s.EnergyMJ, last.s.HasEnergy, true
	}
	return 0, 0, false, false
}

// nextPoll is the first poll time after t no earlier than earliest: polls
// fall on multiples of the interval plus a tenth of it, so that a reading
// lands inside the window it is for.
func (pl *polled) nextPoll(t, earliest time.Time) time.Time {
	iv := int64(pl.interval)
	phase := iv / 10
	e := max(earliest.UnixNano(), t.UnixNano()+1)
	k := (e - phase + iv - 1) / iv
	return time.Unix(0, k*iv+phase)
}

// loop polls until ctx ends: one read at a time (a BMC sees one client),
// at the interval, backing off on errors (doubling up to max_backoff, at
// least a Retry-After).
func (pl *polled) loop(ctx context.Context, now func() time.Time, logger *slog.Logger) {
	log := logger.With("source", pl.src.Name())
	fails := 0
	next := pl.nextPoll(now(), now())
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		rctx, cancel := context.WithTimeout(ctx, pl.timeout)
		t0 := time.Now()
		s, err := pl.src.Read(rctx)
		cancel()
		pl.m.latency.Observe(time.Since(t0).Seconds())
		t1 := now()
		earliest := t1
		switch {
		case err == nil && !validSample(s):
			err = fmt.Errorf("implausible reading %g W", s.PowerW)
			fallthrough
		case err != nil && !errors.Is(err, ErrNoData):
			if ctx.Err() != nil {
				return
			}
			fails++
			var ra *RetryAfterError
			switch {
			case errors.As(err, &ra):
				pl.m.errBusy.Inc()
				earliest = t1.Add(ra.After)
			case errors.Is(err, context.DeadlineExceeded):
				pl.m.errTimeout.Inc()
			default:
				pl.m.errOther.Inc()
			}
			back := pl.interval << min(fails-1, 16)
			if back > pl.maxBackoff || back <= 0 {
				back = pl.maxBackoff
			}
			if e := t1.Add(back - pl.interval); e.After(earliest) {
				earliest = e
			}
			if fails == 1 {
				log.Warn("node power read failed; backing off", "err", err)
			} else {
				log.Debug("node power read failed", "err", err, "consecutive", fails)
			}
		case err == nil:
			pl.m.reads.Inc()
			pl.store(t1, s)
			fallthrough
		default: // ErrNoData: answered, nothing to store
			if fails > 0 {
				log.Info("node power source answers again", "after_failures", fails)
			}
			fails = 0
		}
		next = pl.nextPoll(t1, earliest)
		timer.Reset(time.Until(next))
	}
}

func validSample(s Sample) bool { return s.PowerW >= 0 && s.PowerW <= maxNodeW }
