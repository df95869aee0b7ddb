package alerts

import (
	"context"
	"sync"
	"time"
)

// clock ticks every window once, in order, when its reports are in — in
// event time, not on a timer alone:
//
//   - the input ticks a window itself, before handling the first message
//     the stream stored at or after the window's deadline (end + grace):
//     the stream is read in order, so every report stored before the
//     deadline has been handled. An aggregator that was paused, starved or
//     slow catches up window by window, at its own pace, with every report;
//   - when the input has caught up (the server says nothing is pending and
//     the last delivered message was handled, asked after the deadline),
//     Run ticks the window at its deadline on the wall clock.
//
// Both paths also wait for the meter input (when the aggregator has
// meters, meterGate): a window is ticked only once every meter report
// stored before its deadline has been handled too — the meter input holds
// a message stored at or after the deadline, or has caught up — or, when
// the meter input is missing or makes no progress for a while, ahead
// without it (counted: megawatch_alerts_ticks_without_meters_total). The
// meter input in turn never handles a report stored after the deadline of
// the next window to tick before that window is ticked, so it is never
// further ahead than the node reports.
//
// A report is late only when the stream received it after its window's
// deadline. Ticking in the input also bounds memory: the input never runs
// more than the grace ahead of the last tick.
type clock struct {
	e        *Engine
	ctx      context.Context // Run's
	meters   *meterGate      // nil: no meters in scope
	mu       sync.Mutex
	next     time.Time     // end of the next window to tick
	deadline int64         // next + grace, unix ns
	ticked   chan struct{} // closed (and replaced) at every tick
}

func newClock(ctx context.Context, e *Engine, next time.Time, meters *meterGate) *clock {
	c := &clock{e: e, ctx: ctx, meters: meters, ticked: make(chan struct{})}
	c.set(next)
	return c
}

func (c *clock) set(next time.Time) {
	c.next, c.deadline = next, next.Add(c.e.cfg.Grace).UnixNano()
}

// beforeMsg ticks every window whose deadline a message stored at tsNs is
// past (the input's goroutine), each once the meter input is ready for it.
func (c *clock) beforeMsg(tsNs int64) {
	for {
		c.mu.Lock()
		end, dl := c.next, c.deadline
		c.mu.Unlock()
		if tsNs < dl {
			return
		}
		without := false
		if c.meters != nil {
			without = c.meters.await(c.ctx, dl)
		}
		c.tickIf(end, without)
	}
}

// meterBefore holds the meter input (its goroutine) before a report stored
// at or after the next window's deadline until that window is ticked.
func (c *clock) meterBefore(tsNs int64) {
	for {
		c.mu.Lock()
		dl, ch := c.deadline, c.ticked
		c.mu.Unlock()
		if tsNs < dl {
			return
		}
		c.meters.hold(tsNs)
		select {
		case <-ch:
		case <-c.ctx.Done():
			return
		}
	}
}

func (c *clock) tickLocked(without bool) {
	end := c.next
	c.e.setLag(time.Since(time.Unix(0, c.deadline)))
	if without {
		c.e.m.ticksNoMeters.Inc()
	}
	c.e.Tick(context.Background(), end)
	c.set(end.Add(c.e.cfg.Window))
	close(c.ticked)
	c.ticked = make(chan struct{})
}

// pending is the next window to tick and its deadline.
func (c *clock) pending() (time.Time, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next, time.Unix(0, c.deadline)
}

// tickIf ticks window end if it is still the next one.
func (c *clock) tickIf(end time.Time, without bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next.Equal(end) {
		c.tickLocked(without)
	}
}

// step waits until the next window is ticked (by the input, or here once
// the input — and the meter input — have caught up after the deadline).
// False when ctx ends.
func (c *clock) step(ctx context.Context, in *input) bool {
	end, deadline := c.pending()
	if d := time.Until(deadline); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	var lastAsk time.Time
	caught := false // the input had handled everything stored before the deadline
	for {
		if ctx.Err() != nil {
			return false
		}
		if next, _ := c.pending(); next.After(end) {
			return true // the input ticked it
		}
		if !caught && time.Since(lastAsk) >= 50*time.Millisecond {
			lastAsk = time.Now()
			ok, asked, err := in.caughtUp(ctx)
			caught = err == nil && ok && !asked.Before(deadline)
		}
		if caught {
			ready, without := true, false
			if c.meters != nil {
				ready, without = c.meters.check(deadline.UnixNano())
			}
			if ready {
				c.tickIf(end, without)
				return true
			}
		}
		c.e.setLag(time.Since(deadline))
		c.e.watchdog(time.Now(), false) // the lag alert fires while waiting
		if caught {
			c.meters.wait(ctx)
			continue
		}
		in.waitHandled(ctx, 50*time.Millisecond)
	}
}
