package sim

import (
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// TestFleetNodePowerMixed: with node_power: mixed each node reports the
// source of its first matching node_power_mix entry (redfish when none
// matches); redfish and hwmon carry the same reading (GPUs + host), none
// carries nothing, and the GPU figures do not depend on the source.
func TestFleetNodePowerMixed(t *testing.T) {
	locs := []telemetry.Location{
		{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "n1"},
		{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k02", Node: "n2"},
		{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k03", Node: "n3"},
		{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k04", Node: "n4"},
	}
	cfg := DefaultConfig()
	cfg.NodePower = NodePowerMixed
	cfg.NodePowerMix = []NodePowerMix{
		{Nodes: "rack=k02", Source: NodePowerHwmon},
		{Nodes: "rack=k03", Source: NodePowerNone},
		{Nodes: "rack=k0[34]", Source: NodePowerModel}, // k03 matched above: first wins
	}
	mixed, err := NewFleet(cfg, locs)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := NewFleet(DefaultConfig(), locs) // every node redfish
	if err != nil {
		t.Fatal(err)
	}
	want := []string{NodePowerRedfish, NodePowerHwmon, NodePowerNone, NodePowerModel}
	wantSrc := []telemetry.NodePowerSource{telemetry.NodePowerSource_NODE_POWER_REDFISH, telemetry.NodePowerSource_NODE_POWER_HWMON,
		telemetry.NodePowerSource_NODE_POWER_NONE, telemetry.NodePowerSource_NODE_POWER_MODEL}
	for i := range locs {
		if got := mixed.NodePowerSource(i); got != want[i] {
			t.Errorf("node %d: NodePowerSource %q, want %q", i, got, want[i])
		}
	}
	end := t0.Add(time.Hour)
	for w := 1; w <= 5; w++ {
		we := end.Add(time.Duration(w) * time.Second)
		for i := range locs {
			var a, b telemetry.NodeReport
			mixed.Report(&a, i, we, time.Second, 100*time.Millisecond)
			ref.Report(&b, i, we, time.Second, 100*time.Millisecond)
			if a.NodePowerSource != wantSrc[i] {
				t.Errorf("window %d node %d: source %v, want %v", w, i, a.NodePowerSource, wantSrc[i])
			}
			switch want[i] {
			case NodePowerRedfish, NodePowerHwmon:
				if a.NodePowerMw == nil || *a.NodePowerMw != *b.NodePowerMw {
					t.Errorf("window %d node %d: %s node power %v, want the BMC's %d mW", w, i, want[i], a.NodePowerMw, *b.NodePowerMw)
				}
			case NodePowerNone:
				if a.NodePowerMw != nil {
					t.Errorf("window %d node %d: none reports %d mW", w, i, *a.NodePowerMw)
				}
			}
			if gpuSumW(&a) != gpuSumW(&b) {
				t.Errorf("window %d node %d: GPU sum %v, want %v", w, i, gpuSumW(&a), gpuSumW(&b))
			}
		}
	}
	// The simulated collector path: hwmon is an in-band source, none has none.
	clk := newFakeClock(end)
	if src, ok := mustNew(t, cfg, locs[1], clk.now).NodePowerSource(); !ok || src.Kind() != telemetry.NodePowerSource_NODE_POWER_HWMON {
		t.Errorf("hwmon node: NodePowerSource %v %v", src, ok)
	}
	if _, ok := mustNew(t, cfg, locs[2], clk.now).NodePowerSource(); ok {
		t.Error("a node_power none node has a source")
	}
}

func TestValidateNodePowerMix(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodePower = NodePowerMixed
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "sim.node_power_mix:") {
		t.Errorf("mixed without a mix: %v", err)
	}
	cfg.NodePowerMix = []NodePowerMix{{Nodes: "shelf=1", Source: NodePowerHwmon}, {Nodes: "*", Source: "ipmi"}}
	err := cfg.Validate()
	for _, k := range []string{"sim.node_power_mix[0].nodes:", "sim.node_power_mix[1].source:"} {
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("error lacks %s: %v", k, err)
		}
	}
	// A mix is ignored (not an error) with another node_power: meters --sim
	// sets redfish over the collectors' config.
	cfg.NodePower = NodePowerRedfish
	cfg.NodePowerMix = []NodePowerMix{{Nodes: "*", Source: NodePowerNone}}
	if err := cfg.Validate(); err != nil {
		t.Errorf("redfish with a mix: %v", err)
	}
	f, err := NewFleet(cfg, []telemetry.Location{testLoc})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.NodePowerSource(0); got != NodePowerRedfish {
		t.Errorf("node_power redfish with a mix: %s", got)
	}
}
