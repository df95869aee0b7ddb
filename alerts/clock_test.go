package alerts

import (
	"context"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/internal/topology"
	dto "github.com/prometheus/client_model/go"
)

func clockEngine(t *testing.T) *Engine {
	t.Helper()
	topo, err := topology.Parse([]byte(meterTopo), "meter-topology")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.HTTPAddr = ""
	cfg.Notifiers.Log.Enabled, cfg.Notifiers.NATS.Enabled = false, false
	cfg.Rules = []rules.Rule{{Name: "row_meters_stale", Level: "row", Metric: rules.MetricStaleMeters, Threshold: f(0), Severity: "warning"}}
	e, err := New(cfg, topo, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The meter input holds a report stored at or after the next window's
// deadline until that window is ticked, and the gate then knows that every
// earlier meter report was handled: the window may be ticked.
func TestClockHoldsMeterInputUntilTick(t *testing.T) {
	e := clockEngine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := newInput(nil, "MEGAWATCH_METER", "x", 1, nil)
	gate := newMeterGate(ctx, in, time.Hour)
	t0 := time.Unix(1800000000, 0)
	c := newClock(ctx, e, t0, gate)
	dl := t0.Add(e.cfg.Grace).UnixNano()

	c.meterBefore(dl - 1) // stored before the deadline: handled at once
	if ready, _ := gate.check(dl); ready {
		t.Fatal("gate ready although the meter input has handled nothing stored at or after the deadline")
	}
	released := make(chan struct{})
	go func() {
		c.meterBefore(dl) // stored at the deadline: waits for the tick
		close(released)
	}()
	waitFor(t, 10*time.Second, "the meter input to hold the report", func() bool { return gate.heldNs.Load() == dl })
	select {
	case <-released:
		t.Fatal("the meter input handled a report stored after the deadline before the window was ticked")
	default:
	}
	if ready, without := gate.check(dl); !ready || without {
		t.Fatalf("gate ready %v without %v while the meter input holds a later report: want ready, with meters", ready, without)
	}
	c.tickIf(t0, false)
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the meter input was not released by the tick")
	}
	if n, _ := c.pending(); !n.Equal(t0.Add(e.cfg.Window)) {
		t.Fatalf("next window %v", n)
	}
}

// A meter input that makes no progress is given up on after stuckAfter
// (ticks go ahead without it, counted), and waited for again once it
// handles a report; a missing one never holds a tick.
func TestMeterGateBounded(t *testing.T) {
	ctx := context.Background()
	in := newInput(nil, "MEGAWATCH_METER", "x", 1, nil) // never started: the server never answers
	g := newMeterGate(ctx, in, time.Minute)
	dl := time.Now().UnixNano()
	if ready, _ := g.check(dl); ready {
		t.Fatal("ready without progress before stuckAfter")
	}
	g.mu.Lock()
	g.healthy = time.Now().Add(-2 * time.Minute) // a minute with no progress
	g.mu.Unlock()
	if ready, without := g.check(dl); !ready || !without {
		t.Fatalf("stuck input: ready %v without %v, want both", ready, without)
	}
	if ready, without := g.check(dl + 1); !ready || !without {
		t.Fatal("a given-up input must not be waited for again at the next window")
	}
	in.msgs.Add(1) // it handled a report: waited for again
	if ready, _ := g.check(dl + 2); ready {
		t.Fatal("an input that makes progress again was not waited for")
	}
	in.wmNs.Store(dl + 2)
	if ready, without := g.check(dl + 2); !ready || without {
		t.Fatalf("input past the deadline: ready %v without %v", ready, without)
	}
	if ready, without := newMeterGate(ctx, nil, time.Minute).check(dl); !ready || !without {
		t.Fatal("a missing meter input must never hold a tick")
	}
	e := clockEngine(t)
	c := newClock(ctx, e, time.Unix(1800000000, 0), newMeterGate(ctx, nil, time.Minute))
	c.beforeMsg(time.Unix(1800000010, 0).UnixNano())
	if n, _ := c.pending(); !n.Equal(time.Unix(1800000010, 0)) || readCounter(e.m.ticksNoMeters) != 10 {
		t.Fatalf("next %v, ticks without meters %v: want 10 windows ticked without the missing meter input", n, readCounter(e.m.ticksNoMeters))
	}
}

func readCounter(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
