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
	ctx        context.Context // Run's: bounds the questions to the server
	in         *input          // nil: the meter input is missing
	stuckAfter time.Duration
	heldNs     atomic.Int64 // stream time of the report the meter input holds (unix ns)
	asking     atomic.Bool  // a question to the server is in flight

	mu       sync.Mutex
	lastMsgs uint64
	healthy  time.Time // last progress or catch-up
	gaveUp   bool
	lastAsk  time.Time
	askedNs  int64 // when the last answered question was asked (unix ns) ...
	askOK    bool  // ... and whether the input had caught up then
}

func newMeterGate(ctx context.Context, in *input, stuckAfter time.Duration) *meterGate {
	return &meterGate{ctx: ctx, in: in, stuckAfter: stuckAfter, healthy: time.Now()}
}

// hold records that the meter input waits with a report stored at tsNs.
func (g *meterGate) hold(tsNs int64) {
	if tsNs > g.heldNs.Load() {
		g.heldNs.Store(tsNs)
	}
}

// check: ready when the window with deadline dlNs may be ticked as far as
// meters go; without when that is because the meter input was given up on.
// It never blocks: the question to the server runs on its own (an ordered
// consumer that is being re-created, its stream gone, answers nothing
// until it is back).
func (g *meterGate) check(dlNs int64) (ready, without bool) {
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
	if g.askOK && g.askedNs >= dlNs {
		return true, false
	}
	if now.Sub(g.lastAsk) >= 5*time.Millisecond && g.asking.CompareAndSwap(false, true) {
		g.lastAsk = now
		go g.ask()
	}
	if g.gaveUp || now.Sub(g.healthy) >= g.stuckAfter {
		g.gaveUp = true
		return true, true
	}
	return false, false
}

func (g *meterGate) ask() {
	defer g.asking.Store(false)
	ok, asked, err := g.in.caughtUp(g.ctx)
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		return
	}
	if n := asked.UnixNano(); n > g.askedNs {
		g.askedNs, g.askOK = n, ok
	}
	if ok {
		g.healthy, g.gaveUp = time.Now(), false
	}
}

// await blocks until the meter input is ready for dlNs (or given up on, or
// ctx ends); it reports whether the tick goes ahead without it.
func (g *meterGate) await(ctx context.Context, dlNs int64) (without bool) {
	for {
		if ready, without := g.check(dlNs); ready {
			return without
		}
		if ctx.Err() != nil {
			return true
		}
		g.wait(ctx)
	}
}

// wait blocks until the meter input handles a report, an answer may have
// come, or ctx ends.
func (g *meterGate) wait(ctx context.Context) {
	g.in.waitHandled(ctx, 5*time.Millisecond) // check is ready without an input
}
