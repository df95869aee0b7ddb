package sim

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

func TestHostPowerIdleToMax(t *testing.T) {
	for _, tc := range []struct {
		model           string
		idle, max       float64
		gpuIdle, gpuTDP float64
	}{{"dgxh100", 1900, 4600, 70, 700}, {"dgxb200", 2600, 6300, 140, 1000}} {
		cfg := DefaultConfig()
		cfg.Model = tc.model
		p, err := newParams(cfg)
		if err != nil {
			t.Fatal(err)
		}
		f := func(gpuW, want float64) {
			t.Helper()
			if got := p.hostW(gpuW); math.Abs(got-want) > 1e-9 {
				t.Errorf("%s hostW(%g) = %g, want %g", tc.model, gpuW, got, want)
			}
		}
		f(tc.gpuIdle, tc.idle)
		f(0, tc.idle)
		f(tc.gpuTDP, tc.max)
		f(2*tc.gpuTDP, tc.max)
		f((tc.gpuIdle+tc.gpuTDP)/2, (tc.idle+tc.max)/2)
		// At full load the simulated node stays within the spec's maximum.
		nt, _ := nodepower.LookupNodeType(tc.model)
		if full := tc.max + 8*tc.gpuTDP; full > nt.MaxW {
			t.Errorf("%s: full-load node %g W above the spec's %g W", tc.model, full, nt.MaxW)
		}
	}
	cfg := DefaultConfig()
	cfg.HostIdleW, cfg.HostMaxW = 1000, 2000
	p, _ := newParams(cfg)
	if got := p.hostW(700); got != 2000 {
		t.Errorf("configured host max: %g", got)
	}
}

func fleetReports(t *testing.T, cfg Config, n int) []*telemetry.NodeReport {
	t.Helper()
	f, err := NewFleet(cfg, benchNodes(1))
	if err != nil {
		t.Fatal(err)
	}
	var out []*telemetry.NodeReport
	for s := 1; s <= n; s++ {
		var rep telemetry.NodeReport
		f.Report(&rep, 0, t0.Add(time.Duration(s)*time.Second+time.Hour), time.Second, 100*time.Millisecond)
		out = append(out, &rep)
	}
	return out
}

func gpuSumW(r *telemetry.NodeReport) float64 {
	s := 0.0
	for _, g := range r.Gpus {
		s += telemetry.MilliwattsToW(g.GetPowerMw())
	}
	return s
}

func TestFleetNodePowerModes(t *testing.T) {
	cfg := DefaultConfig()
	redfish := fleetReports(t, cfg, 30)
	cfg.NodePower = NodePowerModel
	model := fleetReports(t, cfg, 30)
	cfg.NodePower = NodePowerNone
	none := fleetReports(t, cfg, 30)
	p, _ := newParams(DefaultConfig())
	nt, _ := nodepower.LookupNodeType("dgxh100")
	for i := range redfish {
		r, m, n := redfish[i], model[i], none[i]
		gpu := gpuSumW(r)
		// redfish: GPUs + host, from the simulated BMC.
		want := gpu + p.hostW(gpu/8)
		if r.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_REDFISH || r.NodePowerMw == nil ||
			math.Abs(telemetry.MilliwattsToW(*r.NodePowerMw)-want) > 0.02 {
			t.Errorf("window %d: redfish %v %v, want %.3f W", i, r.NodePowerSource, r.NodePowerMw, want)
		}
		if r.CpuPowerMw != nil || r.NodeEnergyMj != nil {
			t.Errorf("window %d: CPU or energy fields set", i)
		}
		// model: the collector's estimate, marked MODEL.
		est := nt.HostW + 8*nt.PerGPUW + gpuSumW(m)
		if m.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_MODEL || m.NodePowerMw == nil ||
			math.Abs(telemetry.MilliwattsToW(*m.NodePowerMw)-est) > 0.001 {
			t.Errorf("window %d: model %v %v, want %.3f W", i, m.NodePowerSource, m.NodePowerMw, est)
		}
		// none: absent.
		if n.NodePowerMw != nil || n.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_NONE {
			t.Errorf("window %d: none mode reports %v", i, n.NodePowerMw)
		}
		// The GPU figures are the same in every mode.
		a, b := proto.Clone(r).(*telemetry.NodeReport), proto.Clone(n).(*telemetry.NodeReport)
		a.NodePowerMw, a.NodePowerSource = nil, 0
		if !proto.Equal(a, b) {
			t.Fatalf("window %d: node power changed the GPU figures:\n%v\n%v", i, a, b)
		}
	}
}

func TestFleetNodePowerWithLostGPU(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Faults = []Fault{{Kind: FaultLost, GPU: 3}}
	r := fleetReports(t, cfg, 3)[2]
	// The BMC still sees the lost GPU draw: node power exceeds the seven
	// reported GPUs plus the host by about one GPU.
	if r.NodePowerMw == nil || telemetry.MilliwattsToW(*r.NodePowerMw) < gpuSumW(r)+1900 {
		t.Errorf("redfish with a lost GPU: %v (GPU sum %.0f W)", r.NodePowerMw, gpuSumW(r))
	}
	cfg.NodePower = NodePowerModel
	if m := fleetReports(t, cfg, 3)[2]; m.NodePowerMw != nil || m.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_NONE {
		t.Errorf("model with a lost GPU must be absent, got %v", m.NodePowerMw)
	}
}

func TestDriverBMC(t *testing.T) {
	clk := newFakeClock(t0.Add(time.Hour))
	d := mustNew(t, DefaultConfig(), testLoc, clk.now)
	src, ok := d.NodePowerSource()
	if !ok || src.Kind() != telemetry.NodePowerSource_NODE_POWER_REDFISH {
		t.Fatalf("NodePowerSource: %v %v", src, ok)
	}
	s, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.PowerW < 8*70+1900 || s.PowerW > 8*700+4600 {
		t.Errorf("simulated BMC reads %.0f W, outside idle..full load", s.PowerW)
	}
	cfg := DefaultConfig()
	cfg.NodePower = NodePowerModel
	if _, ok := mustNew(t, cfg, testLoc, clk.now).NodePowerSource(); ok {
		t.Error("a BMC with node_power: model")
	}
}

func TestValidateNodePowerKeys(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodePower = "ipmi"
	cfg.HostIdleW, cfg.HostMaxW = 3000, 2000
	err := cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, k := range []string{"sim.node_power:", "sim.host_max_w:"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error lacks %s: %v", k, err)
		}
	}
}
