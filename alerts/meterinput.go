package alerts

import (
	"context"
	"strings"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// subscribeMeters builds (does not start) the meter input: meter reports
// of the aggregator's scope from MEGAWATCH_METER, into HandleMeter. Nil
// when the stream could not be set up (Start).
func (e *Engine) subscribeMeters() *input {
	if e.meterErr != nil {
		return nil
	}
	handle := func(subject string, data []byte, _ string) {
		if e.meterHook != nil {
			e.meterHook() // tests: a meter input that is read late
		}
		_ = e.agg.HandleMeter(subject, data)
	}
	in := newInput(e.js, telemetry.StreamMeter, "", e.cfg.InputBatch, handle)
	in.filters = meterFilters(e.topo, e.scope, e.cfg.SiteFromHalls)
	return in
}

// startMeters starts the meter input (built by subscribeMeters) from the
// messages stored at or after from.
func (e *Engine) startMeters(ctx context.Context, from time.Time) error {
	if e.min == nil {
		if e.meterErr != nil {
			return e.meterErr
		}
		return nil
	}
	return e.min.start(ctx, from)
}

// stopMeters stops the meter input, waiting a bounded time: an ordered
// consumer whose stream is gone holds its lock while it retries, and its
// Stop waits for the next retry (up to 20 s).
func (e *Engine) stopMeters() {
	if e.min == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		e.min.stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		e.logger.Warn("meter input did not stop within 2s; leaving it to stop on its own", "stream", telemetry.StreamMeter)
	}
}

// meterStuckAfter is how long the clock waits for a meter input that makes
// no progress before it ticks without it: generous (a loaded process is
// slow, not stuck), and paid once, not per window (meterGate).
func (e *Engine) meterStuckAfter() time.Duration {
	if e.meterStuck > 0 {
		return e.meterStuck
	}
	return max(5*time.Second, 5*e.cfg.Window+e.cfg.Grace)
}

// meterFilters are the meter subjects of the aggregator's domains: a
// meter's subject is megawatch.v1.meter.<domain path>.<meter>, so the
// subtree of scope (or everything). A site aggregator fed by hall rollups
// reads only the meters above the hall level (the hall aggregators read
// the others).
func meterFilters(topo *topology.Topology, scope *topology.Domain, fromHalls bool) []string {
	var fixed []string
	if scope != nil {
		fixed = scope.Path
	}
	if !fromHalls {
		return []string{strings.Join(append(append([]string{telemetry.MeterPrefix}, fixed...), ">"), ".")}
	}
	hallDepth := 0
	for i, l := range topo.Levels() {
		if l == topology.LevelHall {
			hallDepth = i
		}
	}
	var out []string
	for depth := len(fixed) - 1; depth < hallDepth; depth++ {
		if depth < 0 {
			continue
		}
		toks := []string{telemetry.MeterPrefix}
		for i := 0; i <= depth; i++ {
			if i < len(fixed) {
				toks = append(toks, fixed[i])
			} else {
				toks = append(toks, "*")
			}
		}
		out = append(out, strings.Join(append(toks, "*"), "."))
	}
	return out
}
