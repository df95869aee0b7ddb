package main

import (
	"context"
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
// with Nats-Msg-Id for dedup. `loadgen` and `demo` use it to stand in for
// thousands of nodes on one machine.
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
func (p *fleetPublisher) publishWindow(end time.Time) error {
	for i := range p.subjects {
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
		if _, err := p.js.PublishMsgAsync(msg); err != nil {
			return fmt.Errorf("publish %s: %w", p.subjects[i], err)
		}
		p.sent++
	}
	return nil
}

// runRealTime publishes one window per window length, aligned to the wall
// clock, until ctx ends or count windows (0 = no limit) were sent.
func (p *fleetPublisher) runRealTime(ctx context.Context, count int) error {
	next := time.Now().Truncate(p.window).Add(p.window)
	for w := 0; count == 0 || w < count; w++ {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
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
