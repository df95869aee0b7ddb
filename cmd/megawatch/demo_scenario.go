package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/alerts/web"
	"github.com/megawatch/megawatch/collector/sim"
)

type (
	webSnapshot = web.Snapshot
	webDomain   = web.DomainView
)

// scenario is the demo's script, in offsets from its epoch. --quick
// compresses every offset (not the 2 s training period) by k.
type scenario struct {
	epoch  time.Time
	k      float64
	length time.Duration
}

// The script, at k = 1 (seconds after the epoch).
const (
	scTrainStart = 10  // a training job starts on every node...
	scTrainRamp  = 20  // ...and ramps up over 20 s (tens of MW)
	scCkptEvery  = 60  // checkpoint pause: the last 10 s of every 60 s of the job
	scCkptFor    = 10  //
	scBurstStart = 90  // hall h1 runs flat out (no communication dips)...
	scBurstStop  = 150 // ...for a minute: above 95% of its capacity, a page
	scBurstRamp  = 5   //
	scTrainStop  = 200 // the job ends, ramping down over scTrainRamp
	scEnd        = 215
	// A row's collectors stop (collector_down) while its branch-circuit
	// meter keeps reading: the meter/node divergence alert fires, and
	// resolves when they are back.
	scDownStart = 35
	scDownStop  = 80
	scDownRow   = "hall=h2,row=r01"
	scDownName  = "h2/r01"
)

// demoNodePower is what the demo's nodes report as node power: most a BMC
// over Redfish, rack rk09 of every row an in-band ACPI power meter, the
// last two nodes of rack rk10 nothing (the aggregator models them: a few
// per row, so that its static model's error stays well inside what the
// divergence rule tolerates).
var demoNodePower = []sim.NodePowerMix{
	{Nodes: "rack=rk09", Source: sim.NodePowerHwmon},
	{Nodes: "rack=rk10,node=*-n1[56]", Source: sim.NodePowerNone},
}

func newScenario(quick bool) scenario {
	k := 1.0
	if quick {
		k = 0.3
	}
	return scenario{
		epoch:  time.Now().Truncate(time.Second).Add(2 * time.Second),
		k:      k,
		length: time.Duration(float64(scEnd) * k * float64(time.Second)),
	}
}

func (s scenario) at(sec float64) time.Duration {
	return time.Duration(sec * s.k * float64(time.Second)).Round(100 * time.Millisecond)
}

// sim is the simulator config that plays the script.
func (s scenario) sim(model string) sim.Config {
	c := sim.DefaultConfig()
	c.Model = model
	c.Epoch = s.epoch
	c.NodePower = sim.NodePowerMixed
	c.NodePowerMix = demoNodePower
	c.Faults = []sim.Fault{{Kind: sim.FaultCollectorDown, Node: scDownRow, GPU: -1, From: s.at(scDownStart), Until: s.at(scDownStop)}}
	c.Jobs = []sim.Job{
		{ // first match wins: the burst overrides training in hall h1
			Name: "h1-burst", Nodes: "hall=h1",
			Start: s.at(scBurstStart), Stop: s.at(scBurstStop), Ramp: s.at(scBurstRamp),
			Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.97, CommFrac: 0.97,
		},
		{
			Name: "train", Nodes: "*",
			Start: s.at(scTrainStart), Stop: s.at(scTrainStop), Ramp: s.at(scTrainRamp),
			Period: 2 * time.Second, Duty: 0.7, ComputeFrac: 0.92, CommFrac: 0.45,
			CheckpointEvery: s.at(scCkptEvery), CheckpointFor: s.at(scCkptFor),
		},
	}
	return c
}

// rules shortens the shipped rules' hold times so that the script fits in
// minutes (production rules hold for 30 s to a minute).
func (s scenario) rules(rs []rules.Rule) []rules.Rule {
	out := make([]rules.Rule, len(rs))
	for i, r := range rs {
		shrink := func(d time.Duration) time.Duration {
			if d == 0 {
				return 0
			}
			return max(time.Second, time.Duration(float64(min(d, 10*time.Second))*s.k).Round(time.Second))
		}
		r.For = shrink(r.For)
		r.KeepFiringFor = shrink(r.KeepFiringFor)
		out[i] = r
	}
	return out
}

// phase names what the script is doing at t.
func (s scenario) phase(t time.Time) string {
	sec := t.Sub(s.epoch).Seconds() / s.k
	trainUp := float64(scTrainStart + scTrainRamp)
	switch {
	case sec < scTrainStart:
		return "idle"
	case sec < trainUp:
		return "job starting (ramp)"
	case sec >= scBurstStart && sec < scBurstStop:
		return "h1 flat out (>95%)"
	case sec >= scTrainStop-scTrainRamp && sec < scTrainStop:
		return "job stopping (ramp)"
	case sec >= scTrainStop:
		return "idle"
	case sec >= scDownStart && sec < scDownStop:
		return scDownName + " collectors down"
	}
	since := sec - scTrainStart
	if r := since - float64(int(since/scCkptEvery))*scCkptEvery; r >= scCkptEvery-scCkptFor {
		return "checkpoint (dip)"
	}
	return "training, 0.5 Hz sync"
}

func (s scenario) describe() string {
	f := func(sec float64) string { return fmtElapsed(s.at(sec)) }
	return fmt.Sprintf("job starts %s and ramps up; trains with a 0.5 Hz synchronised swing; row %s's collectors stop %s-%s while its meter keeps reading (divergence alert, then resolve); checkpoints at %s; hall h1 runs flat out %s-%s (page, then resolve); job stops %s; demo ends %s",
		f(scTrainStart), scDownName, f(scDownStart), f(scDownStop), f(scTrainStart+scCkptEvery-scCkptFor), f(scBurstStart), f(scBurstStop), f(scTrainStop), f(scEnd))
}

// pagePrinter is a slog.Handler that prints the log notifier's alert
// records to the terminal as pages and passes everything else on.
type pagePrinter struct {
	st    *pageState
	next  slog.Handler
	attrs []slog.Attr
}

type pageState struct {
	mu              sync.Mutex
	out             io.Writer
	fired, resolved int
}

func newPagePrinter(out io.Writer, next slog.Handler) *pagePrinter {
	return &pagePrinter{st: &pageState{out: out}, next: next}
}

func (p *pagePrinter) counts() (fired, resolved int) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.fired, p.st.resolved
}

func (p *pagePrinter) Enabled(ctx context.Context, l slog.Level) bool {
	return true
}

func (p *pagePrinter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "alert" {
		if p.next.Enabled(ctx, r.Level) {
			return p.next.Handle(ctx, r)
		}
		return nil
	}
	a := map[string]string{}
	for _, at := range p.attrs {
		a[at.Key] = at.Value.String()
	}
	r.Attrs(func(at slog.Attr) bool { a[at.Key] = at.Value.String(); return true })
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	state := strings.ToUpper(a["state"])
	if state == "FIRING" {
		p.st.fired++
	} else {
		p.st.resolved++
	}
	_, err := fmt.Fprintf(p.st.out, "  >>> %-8s %-8s %s %s: %s\n", strings.ToUpper(a["severity"]), state, a["rule"], a["domain"], a["summary"])
	return err
}

func (p *pagePrinter) WithAttrs(as []slog.Attr) slog.Handler {
	return &pagePrinter{st: p.st, next: p.next.WithAttrs(as), attrs: append(append([]slog.Attr(nil), p.attrs...), as...)}
}

func (p *pagePrinter) WithGroup(name string) slog.Handler {
	return &pagePrinter{st: p.st, next: p.next.WithGroup(name), attrs: p.attrs}
}
