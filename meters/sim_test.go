package meters

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// simHall: a hall switchgear meter (all phases), a branch-circuit monitor
// per row, racks of row r01 with PDUs on feeds a and b, racks of row r02
// with a meter per phase.
const simHall = `
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h1
        capacity_kw: 1000
        meters:
          - {name: swgr-h1, protocol: modbus, address: swgr, phase: L1-L3, modbus: {power: {address: 1, type: f32}}}
        children:
          - name: r01
            capacity_kw: 1000
            meters:
              - {name: bcm-r01, protocol: modbus, address: bcm, modbus: {power: {address: 1, type: u32}}}
            children:
              - name: rk[01-02]
                capacity_kw: 1000
                nodes: ["gpu-{row}-{rack}-n[01-03]"]
                meters:
                  - {name: "pdu-{row}-{rack}-a", protocol: modbus, address: pdu, feed: a, modbus: {power: {address: 1, type: u32}}}
                  - {name: "pdu-{row}-{rack}-b", protocol: modbus, address: pdu, feed: b, modbus: {power: {address: 1, type: u32}}}
          - name: r02
            capacity_kw: 1000
            meters:
              - {name: bcm-r02, protocol: modbus, address: bcm, modbus: {power: {address: 1, type: u32}}}
            children:
              - name: rk01
                capacity_kw: 1000
                nodes: ["gpu-{row}-{rack}-n[01-02]"]
                meters:
                  - {name: "pdu-{row}-{rack}-l1", protocol: modbus, address: pdu, phase: L1, modbus: {power: {address: 1, type: u32}}}
                  - {name: "pdu-{row}-{rack}-l2", protocol: modbus, address: pdu, phase: L2, modbus: {power: {address: 1, type: u32}}}
                  - {name: "pdu-{row}-{rack}-l3", protocol: modbus, address: pdu, phase: L3, modbus: {power: {address: 1, type: u32}}}
`

func simTopology(t testing.TB, doc string) *topology.Topology {
	t.Helper()
	topo, err := topology.Parse([]byte(doc), "sim-hall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

func simTestConfig(epoch time.Time) Config {
	c := DefaultConfig()
	c.Interval, c.Timeout, c.BackoffMax, c.Workers, c.Poller, c.MetricsAddr = 500*time.Millisecond, 300*time.Millisecond, 500*time.Millisecond, 4, "sim-a", ""
	c.Sim.Epoch = epoch
	c.Sim.Faults = []sim.Fault{
		{Kind: sim.FaultMeterSilent, Meter: "pdu-r01-rk02-b", GPU: -1}, // goes silent (from the epoch on)
		{Kind: sim.FaultCollectorDown, Node: "row=r02", GPU: -1},       // a row's collectors stop; its meters keep reading
		{Kind: sim.FaultLost, Node: "gpu-r01-rk01-n01", GPU: 3},        // a lost GPU still draws (the meter sees it)
	}
	c.SimMeters.Feeds = []SimFeed{
		{Meter: "bcm-r02", LossPct: 2.5, NonITW: 120},
		{Level: "row", LossPct: 1},
		{Level: "hall", LossPct: 4, NonITW: 1500, NonITPerNodeW: 700},
	}
	return c
}

// TestSimMetersShares: nodes, share (feeds, phases), loss and non-IT load
// of each simulated meter.
func TestSimMetersShares(t *testing.T) {
	topo := simTopology(t, simHall)
	cfg := simTestConfig(time.Time{})
	sms, err := SimMeters(topo, cfg.SimMeters)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		nodes       int
		share, loss float64
		nonIT       float64
	}{
		"swgr-h1":         {8, 1, 4, 1500 + 8*700},
		"bcm-r01":         {6, 1, 1, 0},
		"bcm-r02":         {2, 1, 2.5, 120},
		"pdu-r01-rk01-a":  {3, 0.5, 0, 0},
		"pdu-r01-rk02-b":  {3, 0.5, 0, 0},
		"pdu-r02-rk01-l2": {2, 1.0 / 3, 0, 0},
	}
	got := map[string]SimMeter{}
	for _, s := range sms {
		got[s.Meter.Name] = s
		if s.Meter.Protocol != ProtocolSim || s.Meter.SNMP != nil || s.Meter.Modbus != nil {
			t.Errorf("%s: protocol %q", s.Meter.Name, s.Meter.Protocol)
		}
	}
	if len(sms) != 10 {
		t.Errorf("%d meters, want 10", len(sms))
	}
	for name, w := range want {
		s, ok := got[name]
		if !ok {
			t.Errorf("no meter %s", name)
			continue
		}
		if len(s.Nodes) != w.nodes || s.Share != w.share || s.LossPct != w.loss || s.NonITW != w.nonIT {
			t.Errorf("%s: nodes %d share %v loss %v non-IT %v; want %+v", name, len(s.Nodes), s.Share, s.LossPct, s.NonITW, w)
		}
	}
	// Value: share × (Σ node power × (1 + loss) + non-IT).
	s := got["swgr-h1"]
	if v := s.Value(func(int) uint32 { return 10_000_000 }); math.Abs(v-(80_000*1.04+7100)) > 1e-9 {
		t.Errorf("swgr value %v", v)
	}
}

// TestSimMetersGenerated: a topology without meters gets a PDU per rack and
// a switchgear meter per hall (the default), or the levels asked for.
func TestSimMetersGenerated(t *testing.T) {
	topo := simTopology(t, `
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h[1-2]
        capacity_kw: 1000
        children:
          - name: r[01-02]
            capacity_kw: 1000
            children:
              - name: rk[01-03]
                capacity_kw: 1000
                nodes: ["{hall}-{row}-{rack}-n[01-02]"]
`)
	sms, err := SimMeters(topo, DefaultSimMetersConfig())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sms {
		names = append(names, s.Meter.Name)
		want := map[string]int{"rack": 2, "hall": 12}[s.Meter.Domain.Level]
		if len(s.Nodes) != want || s.Share != 1 {
			t.Errorf("%s: %d nodes, share %v", s.Meter.Name, len(s.Nodes), s.Share)
		}
		if s.Meter.Domain.Level == "hall" && (s.LossPct != 4 || s.NonITW != 12*700) {
			t.Errorf("%s: loss %v non-IT %v", s.Meter.Name, s.LossPct, s.NonITW)
		}
	}
	if len(sms) != 14 || names[0] != "pdu-dc1-h1-r01-rk01" || !slices.Contains(names, "swgr-dc1-h2") {
		t.Errorf("generated %v", names)
	}
	if _, err := SimMeters(topo, SimMetersConfig{Generate: []string{"pdu"}}); err == nil || !strings.Contains(err.Error(), `sim_meters.generate[0]: sim-hall.yaml has no level "pdu"`) {
		t.Errorf("unknown level: %v", err)
	}
	cfg := DefaultConfig()
	cfg.SimMeters.Feeds = []SimFeed{{Level: "[", LossPct: 101, NonITW: -1}}
	err = cfg.Validate()
	for _, want := range []string{"sim_meters.feeds[0].level: pattern", "sim_meters.feeds[0].loss_pct: must be 0..100", "sim_meters.feeds[0].non_it_w"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

// TestSimMetersEndToEnd runs a poller of simulated meters publishing to an
// in-process JetStream. Every fresh report equals exactly (to float
// rounding) share × (Σ node_power_mw/1000 of the reports the simulated
// collectors send for that window, × (1 + loss) + non-IT); the silent meter
// is stale every window, never 0 W; the row whose collectors are down still
// counts in its meters, so the hall meter exceeds what the published node
// reports account for by exactly that row's power.
func TestSimMetersEndToEnd(t *testing.T) {
	topo := simTopology(t, simHall)
	epoch := time.Now().Add(-time.Minute).Truncate(time.Second)
	cfg := simTestConfig(epoch)
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	p, err := NewSim(cfg, topo, js, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	var runErr error
	go func() { defer wg.Done(); runErr = p.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	var st jetstream.Stream
	deadline := time.Now().Add(60 * time.Second)
	for st == nil && time.Now().Before(deadline) {
		if s, err := js.Stream(context.Background(), telemetry.StreamMeter); err == nil {
			st = s
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if st == nil {
		t.Fatal("no meter stream")
	}
	r := &rig{stream: st}
	const windows = 4
	var reps []*telemetry.MeterReport
	for time.Now().Before(deadline) {
		reps = r.stored(t)
		n := map[string]int{} // fresh reports, and the silent meter's stale ones
		for _, rep := range reps {
			if !rep.Stale || rep.Meter == "pdu-r01-rk02-b" {
				n[rep.Meter]++
			}
		}
		if n["swgr-h1"] >= windows && n["pdu-r01-rk02-b"] >= windows && n["bcm-r02"] >= windows {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatal(runErr)
	}
	reps = r.stored(t)

	// The simulated collectors: the same node model, reports for the same
	// windows, in order.
	locs := make([]telemetry.Location, topo.NumNodes())
	for i, n := range topo.Nodes() {
		locs[i] = n.Location
	}
	collectors, err := sim.NewFleet(cfg.Sim, locs)
	if err != nil {
		t.Fatal(err)
	}
	var ends []int64
	for _, rep := range reps {
		if !slices.Contains(ends, rep.WindowEndUnixNs) {
			ends = append(ends, rep.WindowEndUnixNs)
		}
	}
	slices.Sort(ends)
	nodeMW := map[int64][]uint32{}
	published := map[int64][]bool{}
	for _, e := range ends {
		var nr telemetry.NodeReport
		for i := range locs {
			collectors.Report(&nr, i, time.Unix(0, e), cfg.Interval, cfg.Interval/10)
			if nr.NodePowerMw == nil || nr.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_REDFISH {
				t.Fatalf("node %d: no node power", i)
			}
			nodeMW[e] = append(nodeMW[e], nr.GetNodePowerMw())
			published[e] = append(published[e], !collectors.CollectorDown(i, time.Unix(0, e)))
		}
	}
	sms, err := SimMeters(topo, cfg.SimMeters)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]SimMeter{}
	for _, s := range sms {
		byName[s.Meter.Name] = s
	}
	freshN, staleN := 0, 0
	for _, rep := range reps {
		s := byName[rep.Meter]
		if rep.Meter == "pdu-r01-rk02-b" {
			if !rep.Stale || rep.PowerW != nil || !strings.Contains(rep.Error, "meter_silent") {
				t.Fatalf("silent meter reported %+v", rep)
			}
			staleN++
			continue
		}
		if rep.Stale {
			// A loaded test machine may miss a window (overload, timeout):
			// stale, with no power, is then the right report.
			if rep.PowerW != nil || rep.Error == "" {
				t.Fatalf("stale report with power or without a reason: %+v", rep)
			}
			t.Logf("meter %s stale at %d: %s", rep.Meter, rep.WindowEndUnixNs, rep.Error)
			continue
		}
		if rep.PowerW == nil {
			t.Fatalf("meter %s: fresh report without power", rep.Meter)
		}
		if rep.Protocol != telemetry.MeterProtocol_METER_PROTOCOL_UNSPECIFIED || rep.Poller != "sim-a" || rep.Level != s.Meter.Domain.Level {
			t.Errorf("report %+v", rep)
		}
		mw := nodeMW[rep.WindowEndUnixNs]
		var sum uint64
		for _, i := range s.Nodes {
			sum += uint64(mw[i])
		}
		want := s.Share * (float64(sum)/1000*(1+s.LossPct/100) + s.NonITW)
		if got := *rep.PowerW; math.Abs(got-want) > 1e-9*want || want < 1000 {
			t.Errorf("%s at %d: %.6f W, want %.6f W (Σ nodes %d mW)", rep.Meter, rep.WindowEndUnixNs, got, want, sum)
		}
		freshN++
		if rep.Meter == "swgr-h1" {
			// What the published node reports account for, and what they miss.
			var pub, down uint64
			for _, i := range s.Nodes {
				if published[rep.WindowEndUnixNs][i] {
					pub += uint64(mw[i])
				} else {
					down += uint64(mw[i])
				}
			}
			gap := *rep.PowerW - (float64(pub)/1000*(1+s.LossPct/100) + s.NonITW)
			if wantGap := float64(down) / 1000 * (1 + s.LossPct/100); down == 0 || math.Abs(gap-wantGap) > 1e-6*wantGap {
				t.Errorf("hall meter exceeds the published reports by %.3f W, want the stopped row's %.3f W", gap, wantGap)
			}
		}
	}
	if freshN < 4*windows || staleN < windows {
		t.Errorf("%d fresh, %d stale reports", freshN, staleN)
	}
}
