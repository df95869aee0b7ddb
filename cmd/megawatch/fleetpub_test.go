package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters"
)

// fleetpubHall: two rows of two racks of two nodes, a branch-circuit
// monitor per row and a switchgear meter on the hall.
const fleetpubHall = `
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h1
        capacity_kw: 1000
        meters:
          - {name: swgr-h1, protocol: modbus, address: swgr, modbus: {power: {address: 1, type: f32}}}
        children:
          - name: r[01-02]
            capacity_kw: 500
            meters:
              - {name: "bcm-{row}", protocol: modbus, address: "bcm-{row}", modbus: {power: {address: 1, type: u32}}}
            children:
              - name: rk[01-02]
                capacity_kw: 250
                nodes: ["n-{row}-{rack}-[01-02]"]
`

// TestFleetPublisherCollectorDown: the nodes of a collector_down fault
// publish nothing for the windows it covers (exact counts per node on the
// stream), the others publish every window with their node power source
// (redfish, hwmon from node_power_mix); the simulated meters over the
// stopped row keep reading the power its nodes still draw, so the row's
// meter equals the nodes' true power while no report of them arrives, and
// the other row's meter equals what its nodes published.
func TestFleetPublisherCollectorDown(t *testing.T) {
	topo, err := topology.Parse([]byte(fleetpubHall), "fleetpub-hall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	locs := make([]telemetry.Location, topo.NumNodes())
	for i, n := range topo.Nodes() {
		locs[i] = n.Location
	}
	// The fault covers scenario time [10 s, 60 s): windows ending 11..60 s
	// after the epoch. The epoch is 15 s ago, so the meters' windows of the
	// next seconds fall in it too.
	epoch := time.Now().Truncate(time.Second).Add(-15 * time.Second)
	scfg := sim.DefaultConfig()
	scfg.Model = "dgxb200"
	scfg.Epoch = epoch
	scfg.NodePower = sim.NodePowerMixed
	scfg.NodePowerMix = []sim.NodePowerMix{{Nodes: "rack=rk02", Source: sim.NodePowerHwmon}}
	scfg.Faults = []sim.Fault{{Kind: sim.FaultCollectorDown, Node: "row=r02", GPU: -1, From: 10 * time.Second, Until: 60 * time.Second}}

	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.URL())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}

	// The simulated meters, in real time, for a few windows (in the fault).
	mcfg := meters.DefaultConfig()
	mcfg.Interval, mcfg.Timeout, mcfg.BackoffMax, mcfg.Workers, mcfg.Poller, mcfg.MetricsAddr = 500*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond, 4, "sim-a", ""
	mcfg.EnsureStream = false
	mcfg.Sim = scfg
	mp, err := meters.NewSim(mcfg, topo, js, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = mp.Run(mctx) }()
	meterReps := func() map[string][]*telemetry.MeterReport {
		out := map[string][]*telemetry.MeterReport{}
		for _, m := range streamMsgs(t, js, telemetry.StreamMeter) {
			var r telemetry.MeterReport
			if err := proto.Unmarshal(m, &r); err != nil {
				t.Fatal(err)
			}
			if !r.Stale {
				out[r.Meter] = append(out[r.Meter], &r)
			}
		}
		return out
	}
	var mr map[string][]*telemetry.MeterReport
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		mr = meterReps()
		if len(mr["bcm-r01"]) >= 3 && len(mr["bcm-r02"]) >= 3 && len(mr["swgr-h1"]) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("simulated meters did not report 3 fresh windows each: %d %d %d", len(mr["bcm-r01"]), len(mr["bcm-r02"]), len(mr["swgr-h1"]))
		}
	}
	mcancel()
	wg.Wait()
	if runErr != nil {
		t.Fatal(runErr)
	}
	mr = meterReps()

	// The fleet publisher: 1 s windows ending 1..12 s after the epoch (the
	// fault starts at 10 s), then the meters' windows (500 ms, from 15 s on).
	fleet, err := sim.NewFleet(scfg, locs)
	if err != nil {
		t.Fatal(err)
	}
	fp, err := newFleetPublisher(fleet, locs, js, time.Second, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	const windows = 12
	for w := 1; w <= windows; w++ {
		if err := fp.publishWindow(epoch.Add(time.Duration(w) * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	var meterEnds []int64
	for _, rs := range mr {
		for _, r := range rs {
			if e := r.WindowEndUnixNs; !slices.Contains(meterEnds, e) {
				meterEnds = append(meterEnds, e)
			}
		}
	}
	slices.Sort(meterEnds)
	fp.window, fp.slot = 500*time.Millisecond, 50*time.Millisecond
	for _, e := range meterEnds {
		if err := fp.publishWindow(time.Unix(0, e)); err != nil {
			t.Fatal(err)
		}
	}
	if err := fp.waitAcks(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Exact counts: r01's nodes every window, r02's the 10 windows ending
	// at 1..10 s (before the fault) and none of the meters' windows.
	count := map[string]int{}
	byWindow := map[int64]map[string]*telemetry.NodeReport{}
	for _, m := range streamMsgs(t, js, telemetry.StreamPower) {
		var r telemetry.NodeReport
		if err := proto.Unmarshal(m, &r); err != nil {
			t.Fatal(err)
		}
		count[r.Node]++
		if byWindow[r.WindowEndUnixNs] == nil {
			byWindow[r.WindowEndUnixNs] = map[string]*telemetry.NodeReport{}
		}
		byWindow[r.WindowEndUnixNs][r.Node] = &r
	}
	total := windows + len(meterEnds)
	wantDown := 0
	for _, l := range locs {
		want := total
		if l.Row == "r02" {
			want = 10
			wantDown += total - 10
		}
		if count[l.Node] != want {
			t.Errorf("node %s: %d reports on the stream, want %d", l.Node, count[l.Node], want)
		}
	}
	if fp.down != wantDown || fp.sent != len(locs)*total-wantDown || fp.skipped != 0 {
		t.Errorf("publisher counts: sent %d, down %d, skipped %d; want %d, %d, 0", fp.sent, fp.down, fp.skipped, len(locs)*total-wantDown, wantDown)
	}

	// The meters kept reading: r01's meter is what its nodes published
	// (× 1.01 busway loss), r02's is what its silent nodes still drew.
	truth, err := sim.NewFleet(scfg, locs) // the same nodes, for their true power
	if err != nil {
		t.Fatal(err)
	}
	sms, err := meters.SimMeters(topo, mcfg.SimMeters)
	if err != nil {
		t.Fatal(err)
	}
	sm := map[string]meters.SimMeter{}
	for _, s := range sms {
		sm[s.Meter.Name] = s
	}
	var nr telemetry.NodeReport
	for _, e := range meterEnds {
		pub := byWindow[e]
		trueMW := make([]uint32, len(locs))
		for i := range locs {
			truth.Report(&nr, i, time.Unix(0, e), 500*time.Millisecond, 500*time.Millisecond)
			trueMW[i] = nr.GetNodePowerMw()
		}
		for i, l := range locs {
			r, ok := pub[l.Node]
			switch {
			case l.Row == "r02" && ok:
				t.Errorf("window %d: node %s published while its collector is down", e, l.Node)
			case l.Row == "r01" && !ok:
				t.Errorf("window %d: node %s did not publish", e, l.Node)
			case l.Row == "r01":
				wantSrc := telemetry.NodePowerSource_NODE_POWER_REDFISH
				if l.Rack == "rk02" {
					wantSrc = telemetry.NodePowerSource_NODE_POWER_HWMON
				}
				if r.NodePowerSource != wantSrc || r.GetNodePowerMw() != trueMW[i] {
					t.Errorf("window %d node %s: node power %d mW from %v, want %d mW from %v", e, l.Node, r.GetNodePowerMw(), r.NodePowerSource, trueMW[i], wantSrc)
				}
			}
		}
		for _, name := range []string{"bcm-r01", "bcm-r02", "swgr-h1"} {
			var rep *telemetry.MeterReport
			for _, r := range mr[name] {
				if r.WindowEndUnixNs == e {
					rep = r
				}
			}
			if rep == nil {
				continue // this meter missed the window (a loaded machine): stale, not checked
			}
			s := sm[name]
			want := s.Value(func(i int) uint32 {
				if r, ok := pub[locs[i].Node]; ok {
					return r.GetNodePowerMw() // what reached the stream
				}
				return trueMW[i] // what a silent node still draws
			})
			if got := rep.GetPowerW(); math.Abs(got-want) > 1e-9*want || want < 10_000 {
				t.Errorf("window %d: %s reads %.3f W, want %.3f W", e, name, got, want)
			}
		}
	}
}

// streamMsgs is every message stored in the stream.
func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) [][]byte {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Data)
	}
	return out
}

// TestLoadgenSimConfigCollectorDown: `loadgen --sim-config` takes the
// simulator's keys; a collector_down fault over some nodes stops exactly
// their reports, and loadgen says how many it did not send.
func TestLoadgenSimConfigCollectorDown(t *testing.T) {
	srv := natstest.RunServer(t)
	f := filepath.Join(t.TempDir(), "sim.yaml")
	// The nodes loadgen publishes; the faults name two of them.
	locs, err := loadgenLocations("", 40)
	if err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("model: dgxb200\nfaults:\n  - {kind: collector_down, node: %q}\n  - {kind: collector_down, node: %q}\n", locs[3].Node, locs[7].Node)
	if err := os.WriteFile(f, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runLoadgen(context.Background(), []string{"--nats", srv.URL(), "--nodes", "40", "--rate", "max", "--count", "3", "--sim-config", f}, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "published 114 reports of 40 nodes") || !strings.Contains(out.String(), "6 not sent (collector_down)") {
		t.Errorf("loadgen output: %s", out.String())
	}
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	count := map[string]int{}
	for _, m := range streamMsgs(t, js, telemetry.StreamPower) {
		var r telemetry.NodeReport
		if err := proto.Unmarshal(m, &r); err != nil {
			t.Fatal(err)
		}
		count[r.Node]++
	}
	for i, l := range locs {
		want := 3
		if i == 3 || i == 7 {
			want = 0
		}
		if count[l.Node] != want {
			t.Errorf("node %s: %d reports, want %d", l.Node, count[l.Node], want)
		}
	}
	// A bad key in the file is an error naming it.
	if err := os.WriteFile(f, []byte("faults: [{kind: collector_down}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = runLoadgen(context.Background(), []string{"--nats", srv.URL(), "--rate", "max", "--count", "1", "--sim-config", f}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "faults[0].node") {
		t.Errorf("bad sim config: %v", err)
	}
}
