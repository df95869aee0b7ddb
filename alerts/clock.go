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
// A report is late only when the stream received it after its window's
// deadline. Ticking in the input also bounds memory: the input never runs
// more than the grace ahead of the last tick.
type clock struct {
	e        *Engine
	mu       sync.Mutex
	next     time.Time // end of the next window to tick
	deadline int64     // next + grace, unix ns
}

func newClock(e *Engine, next time.Time) *clock {
	c := &clock{e: e}
	c.set(next)
	return c
}

func (c *clock) set(next time.Time) {
	c.next, c.deadline = next, next.Add(c.e.cfg.Grace).UnixNano()
}

// beforeMsg ticks every window whose deadline a message stored at tsNs is
// past (the input's goroutine).
func (c *clock) beforeMsg(tsNs int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for tsNs >= c.deadline {
		c.tickLocked()
	}
}

func (c *clock) tickLocked() {
	end := c.next
	c.e.setLag(time.Since(time.Unix(0, c.deadline)))
	c.e.Tick(context.Background(), end)
	c.set(end.Add(c.e.cfg.Window))
}

// pending is the next window to tick and its deadline.
func (c *clock) pending() (time.Time, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.next, time.Unix(0, c.deadline)
}

// tickIf ticks window end if it is still the next one.
func (c *clock) tickIf(end time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.next.Equal(end) {
		c.tickLocked()
	}
}

// step waits until the next window is ticked (by the input, or here once
// the input has caught up after the deadline). False when ctx ends.
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
	for {
		if ctx.Err() != nil {
			return false
		}
		if next, _ := c.pending(); next.After(end) {
			return true // the input ticked it
		}
		if time.Since(lastAsk) >= 50*time.Millisecond {
			lastAsk = time.Now()
			if ok, asked, err := in.caughtUp(ctx); err == nil && ok && !asked.Before(deadline) {
				c.tickIf(end)
				return true
			}
		}
		c.e.setLag(time.Since(deadline))
		c.e.watchdog(time.Now(), false) // the lag alert fires while waiting
		in.waitHandled(ctx, 50*time.Millisecond)
	}
}
