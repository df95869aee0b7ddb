package facilitytest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// publisher publishes the NodeReports of the hall's t-* nodes every window
// with known values, as their collectors would: on the node's subject, with
// its Msg-Id, aligned to the wall clock.
type publisher struct {
	t      testing.TB
	js     jetstream.JetStream
	nodes  []pubNode
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	down map[string]bool // nodes whose "collector" is stopped
}

type pubNode struct {
	spec    nodeSpec
	loc     telemetry.Location
	subject string
	seq     uint64
	boot    uint64
}

func startPublisher(t testing.TB, js jetstream.JetStream, topo *topology.Topology, specs map[string]nodeSpec) *publisher {
	p := &publisher{t: t, js: js, down: map[string]bool{}, done: make(chan struct{})}
	for i, n := range topo.Nodes() {
		s := specs[n.Name]
		if s.real() {
			continue
		}
		subj, err := telemetry.PowerSubject(n.Location)
		if err != nil {
			t.Fatal(err)
		}
		p.nodes = append(p.nodes, pubNode{spec: s, loc: n.Location, subject: subj, boot: uint64(1000 + i)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.run(ctx)
	t.Cleanup(p.stop)
	return p
}

func (p *publisher) stop() {
	p.cancel()
	<-p.done
}

// setDown stops (or restarts) the reports of the nodes named.
func (p *publisher) setDown(down bool, names ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range names {
		p.down[n] = down
	}
}

func (p *publisher) run(ctx context.Context) {
	defer close(p.done)
	for {
		end := time.Now().Truncate(window).Add(window)
		tm := time.NewTimer(time.Until(end))
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C:
		}
		p.mu.Lock()
		down := make(map[string]bool, len(p.down))
		for k, v := range p.down {
			down[k] = v
		}
		p.mu.Unlock()
		for i := range p.nodes {
			n := &p.nodes[i]
			if down[n.spec.name] {
				continue
			}
			n.seq++
			data, err := proto.Marshal(n.report(end))
			if err != nil {
				p.t.Errorf("encode report: %v", err)
				return
			}
			msg := nats.NewMsg(n.subject)
			msg.Data = data
			msg.Header.Set(telemetry.HeaderMsgID, telemetry.MsgID(n.spec.name, end.UnixNano()))
			msg.Header.Set(telemetry.HeaderSchema, telemetry.SchemaVersion)
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = p.js.PublishMsg(pctx, msg)
			cancel()
			if err != nil && ctx.Err() == nil {
				p.t.Logf("publish %s: %v (the aggregator holds the node's last window)", n.spec.name, err)
			}
		}
	}
}

// report is the node's NodeReport for the window ending at end: every GPU
// at gpuW (mean, min, max, every slot), and node power when it has it.
func (n *pubNode) report(end time.Time) *telemetry.NodeReport {
	s := n.spec
	slots := int(window / slot)
	r := &telemetry.NodeReport{Site: n.loc.Site, Hall: n.loc.Hall, Row: n.loc.Row, Rack: n.loc.Rack, Node: n.loc.Node,
		WindowEndUnixNs: end.UnixNano(), WindowMs: uint32(window / time.Millisecond), SlotMs: uint32(slot / time.Millisecond),
		Seq: n.seq, BootId: n.boot}
	for range slots {
		r.SlotPowerW = append(r.SlotPowerW, uint32(int64(s.gpus)*s.gpuW))
	}
	mw := uint32(s.gpuW * 1000)
	for g := range s.gpus {
		r.Gpus = append(r.Gpus, &telemetry.Gpu{Index: uint32(g), Model: "NVIDIA H100 80GB HBM3", Health: telemetry.Health_HEALTH_OK,
			PowerMw: proto.Uint32(mw), PowerMinMw: proto.Uint32(mw), PowerMaxMw: proto.Uint32(mw),
			PowerLimitMw: proto.Uint32(700_000), TempC: proto.Int32(55), MemTempC: proto.Int32(60)})
	}
	if s.kind == kindMeasured {
		r.NodePowerMw = proto.Uint32(uint32(s.nodeW * 1000))
		r.NodePowerSource = telemetry.NodePowerSource_NODE_POWER_REDFISH
	}
	return r
}
