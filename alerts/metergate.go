package alerts

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// meterGate says when the meter input is ready for a window's deadline:
// it has handled every meter report the stream stored before it. That is
// so when it handled (or holds, waiting for the tick) a report stored at
// or after the deadline — the stream is read in order — or when the server
// says it has caught up, asked after the deadline.
//
// Waiting is bounded: a meter input that is missing (the stream or its
// consumer could not be set up) or that makes no progress — nothing
// handled and not caught up — for stuckAfter is given up on, and windows
// are ticked without it (their meters are then stale: degraded, never
// 0 W) until it makes progress again. So a missing, empty or broken meter
// stream never stops ticking and never slows it down for more than once.
type meterGate struct {
	in         *input // nil: the meter input is missing
	stuckAfter time.Duration
	heldNs     atomic.Int64 // stream time of the report the meter input holds (unix ns)

	mu       sync.Mutex
	lastMsgs uint64
	healthy  time.Time // last progress or catch-up
	gaveUp   bool
	lastAsk  time.Time
	askOK    bool
	askedNs  int64
}

func newMeterGate(in *input, stuckAfter time.Duration) *meterGate {
	return &meterGate{in: in, stuckAfter: stuckAfter, healthy: time.Now()}
}

// hold records that the meter input waits with a report stored at tsNs.
func (g *meterGate) hold(tsNs int64) {
	if tsNs > g.heldNs.Load() {
		g.heldNs.Store(tsNs)
	}
}

// check: ready when the window with deadline dlNs may be ticked as far as
// meters go; without when that is because the meter input was given up on.
func (g *meterGate) check(ctx context.Context, dlNs int64) (ready, without bool) {
	if g.in == nil {
		return true, true
	}
	if g.in.wmNs.Load() >= dlNs || g.heldNs.Load() >= dlNs {
		return true, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if m := g.in.msgs.Load(); m != g.lastMsgs {
		g.lastMsgs, g.healthy, g.gaveUp = m, now, false
	}
	// One question to the server per 20 ms at most, whoever asks.
	if now.Sub(g.lastAsk) >= 20*time.Millisecond {
		g.lastAsk = now
		ok, asked, err := g.in.caughtUp(ctx)
		g.askOK, g.askedNs = err == nil && ok, asked.UnixNano()
		if g.askOK {
			g.healthy, g.gaveUp = now, false
		}
	}
	if g.askOK && g.askedNs >= dlNs {
		return true, false
	}
	if g.gaveUp || now.Sub(g.healthy) >= g.stuckAfter {
		g.gaveUp = true
		return true, true
	}
	return false, false
}

// await blocks until the meter input is ready for dlNs (or given up on, or
// ctx ends); it reports whether the tick goes ahead without it.
func (g *meterGate) await(ctx context.Context, dlNs int64) (without bool) {
	for {
		if ready, without := g.check(ctx, dlNs); ready {
			return without
		}
		if ctx.Err() != nil {
			return true
		}
		g.in.waitHandled(ctx, 20*time.Millisecond) // check is ready without an input
	}
}
