package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// fleetPublisher publishes the reports of many simulated nodes straight
// from the simulator's model (no NVML layer), exactly as collectors would:
// one protobuf NodeReport per node per window on the node's power subject,
// with Nats-Msg-Id for dedup, and node power as the simulator's node_power
// says (per node with mixed). A node whose collector is down for a window
// (a collector_down fault) publishes nothing for it; the node still draws,
// so simulated meters over it keep reading it. `loadgen` and `demo` use it
// to stand in for thousands of nodes on one machine.
type fleetPublisher struct {
	fleet    *sim.Fleet
	subjects []string
	js       jetstream.JetStream
	window   time.Duration
	slot     time.Duration
	bootID   uint64
	version  string
	rep      telemetry.NodeReport
	buf      []byte
	sent     int
	// skipped counts reports not published because the publisher fell
	// behind (NATS did not take them fast enough, or the machine was too
	// busy to build them in time): it thins windows rather than failing.
	skipped int
	// down counts reports not published because the node's collector was
	// down (collector_down faults): that is the scenario, not a shortfall.
	down   int
	offset int // node to start the next window with (skipped ones first)
	// warn, when set, is told once per thinned or skipped window.
	warn func(msg string, args ...any)
	// thin: in real time, thin or skip windows when behind; otherwise
	// (as fast as possible) wait for NATS instead.
	thin bool
}

func newFleetPublisher(fleet *sim.Fleet, locs []telemetry.Location, js jetstream.JetStream, window, slot time.Duration) (*fleetPublisher, error) {
	p := &fleetPublisher{fleet: fleet, js: js, window: window, slot: slot, bootID: rand.Uint64() | 1, version: Version()}
	p.subjects = make([]string, len(locs))
	for i, l := range locs {
		s, err := telemetry.PowerSubject(l)
		if err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		p.subjects[i] = s
	}
	return p, nil
}

// publishWindow publishes every node's report for the window ending at end.
// When NATS stalls (too many publishes awaiting their ack) it stops this
// window there — the nodes not sent are first in the next window — and
// says so, instead of failing: a loaded machine gets thinner windows, and
// the aggregator counts the silent nodes as missing.
func (p *fleetPublisher) publishWindow(end time.Time) error {
	n := len(p.subjects)
	for k := range n {
		i := (p.offset + k) % n
		if p.fleet.CollectorDown(i, end) {
			// Not simulated either: the node's next report integrates
			// the gap, as its GPUs' energy counters kept counting.
			p.down++
			continue
		}
		p.fleet.Report(&p.rep, i, end, p.window, p.slot)
		p.rep.BootId = p.bootID
		if p.rep.Seq == 1 || p.rep.Seq%60 == 1 {
			p.rep.Version = p.version
		}
		var err error
		p.buf, err = proto.MarshalOptions{}.MarshalAppend(p.buf[:0], &p.rep)
		if err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
		msg := nats.NewMsg(p.subjects[i])
		msg.Data = append([]byte(nil), p.buf...)
		msg.Header.Set(telemetry.HeaderMsgID, telemetry.MsgID(p.rep.Node, p.rep.WindowEndUnixNs))
		msg.Header.Set(telemetry.HeaderSchema, telemetry.SchemaVersion)
		_, err = p.js.PublishMsgAsync(msg)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) && !p.thin {
			// As fast as possible (loadgen --rate max): wait for acks instead.
			if err = p.waitAcks(30 * time.Second); err == nil {
				_, err = p.js.PublishMsgAsync(msg)
			}
		}
		if err != nil {
			if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				p.skipped += n - k
				p.offset = i
				p.say("publisher behind: NATS stalled, window thinned", "window_end", end.Format(time.TimeOnly), "sent", k, "skipped", n-k)
				return nil
			}
			return fmt.Errorf("publish %s: %w", p.subjects[i], err)
		}
		p.sent++
	}
	return nil
}

func (p *fleetPublisher) say(msg string, args ...any) {
	if p.warn != nil {
		p.warn(msg, args...)
	}
}

// runRealTime publishes one window per window length, aligned to the wall
// clock, until ctx ends or count windows (0 = no limit) were sent.
func (p *fleetPublisher) runRealTime(ctx context.Context, count int) error {
	p.thin = true
	next := time.Now().Truncate(p.window).Add(p.window)
	for w := 0; count == 0 || w < count; w++ {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		// Too busy to keep up: skip the windows already over (their
		// reports would be late anyway) rather than bursting them out.
		if behind := time.Since(next); behind > p.window {
			missed := int(behind / p.window)
			p.skipped += missed * len(p.subjects)
			p.say("publisher behind: windows skipped", "windows", missed, "behind", behind.Round(time.Millisecond))
			next = next.Add(time.Duration(missed) * p.window)
		}
		if err := p.publishWindow(next); err != nil {
			return err
		}
		next = next.Add(p.window)
	}
	return nil
}

// waitAcks waits until every async publish was acknowledged.
func (p *fleetPublisher) waitAcks(timeout time.Duration) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%d publishes still unacknowledged after %s", p.js.PublishAsyncPending(), timeout)
	}
}
