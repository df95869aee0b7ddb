package collector

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/collector/nodepower/bmctest"
	"github.com/megawatch/megawatch/internal/obs"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

const mockupEnergyMJ = 325675 * 3_600_000_000 // the mockup's TotalEnergy, 325675 kW.h

// modelMW is what the model says for a report's GPUs (DGX H100 figures).
func modelMW(r *telemetry.NodeReport) uint32 {
	var sum uint64
	for _, g := range r.Gpus {
		sum += uint64(g.GetPowerMw())
	}
	nt, _ := nodepower.LookupNodeType("dgxh100")
	return uint32((nt.HostW+nt.PerGPUW*float64(len(r.Gpus)))*1000 + float64(sum) + 0.5)
}

// TestNodePowerInReports runs the collector with a Redfish BMC (the DMTF
// mockup over TLS) and the model behind it, publishing to an in-process
// JetStream: reports carry the BMC's chassis power and energy counter with
// source REDFISH; while the BMC answers 503 or hangs the model takes over,
// marked MODEL, and the GPU sampling and reports go on every window.
func TestNodePowerInReports(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	bmc := bmctest.New(t)
	bmc.SetPowerW(6543)
	cfg := fastConfig()
	// Windows long enough that a loaded machine never times a GPU out: the
	// test asserts every GPU of every report.
	cfg.Window, cfg.Slot, cfg.CallTimeout = 500*time.Millisecond, 50*time.Millisecond, 250*time.Millisecond
	cfg.NodePower.Sources = []string{nodepower.SourceRedfish, nodepower.SourceModel}
	cfg.NodePower.Redfish.URL = bmc.URL()
	cfg.NodePower.Redfish.CAFile = bmc.CAFile(t)
	cfg.NodePower.Redfish.Timeout = 300 * time.Millisecond
	cfg.NodePower.Redfish.MaxBackoff = time.Second
	dev := newMockNode(time.Now)
	reg := obs.NewRegistry()
	c, err := New(cfg, dev, testLoc, collectorConn(t, srv.URL()), testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	redfishSeen := func(min int) func() bool {
		return func() bool {
			n := 0
			for _, r := range streamReports(t, srv.URL()) {
				if r.NodePowerSource == telemetry.NodePowerSource_NODE_POWER_REDFISH {
					n++
				}
			}
			return n >= min
		}
	}
	waitFor(t, "reports with Redfish node power", 30*time.Second, redfishSeen(3))

	// The BMC is busy, then hangs: the reports go on, with the estimate.
	bmc.SetBusy(1<<30, "1")
	published := counterValue(t, c.m.published)
	waitFor(t, "reports while the BMC is busy", 30*time.Second, func() bool { return counterValue(t, c.m.published) >= published+5 })
	bmc.SetBusy(0, "")
	// One request at a time, up to here (a request the client gave up on
	// may linger in the server for a moment after the hang).
	maxConc := bmc.MaxConcurrent()
	bmc.Hold()
	published = counterValue(t, c.m.published)
	waitFor(t, "reports while the BMC hangs", 30*time.Second, func() bool { return counterValue(t, c.m.published) >= published+5 })
	bmc.Release()
	n := 0
	for _, r := range streamReports(t, srv.URL()) {
		if r.NodePowerSource == telemetry.NodePowerSource_NODE_POWER_REDFISH {
			n++
		}
	}
	waitFor(t, "Redfish node power again", 30*time.Second, redfishSeen(n+2))

	reps := streamReports(t, srv.URL())
	checkExactlyOnce(t, reps)
	var bySource [4]int
	withEnergy := 0
	for _, r := range reps {
		for i, g := range r.Gpus {
			if g.Health != telemetry.Health_HEALTH_OK || g.PowerMw == nil {
				t.Errorf("seq %d gpu %d: %v (node power must not disturb the GPUs)", r.Seq, i, g)
			}
		}
		bySource[r.NodePowerSource]++
		switch r.NodePowerSource {
		case telemetry.NodePowerSource_NODE_POWER_REDFISH:
			// The energy sensor is a second GET: a poll whose second GET met
			// the 503 carries the power alone.
			if r.NodeEnergyMj != nil {
				withEnergy++
			}
			if r.GetNodePowerMw() != 6_543_000 || (r.NodeEnergyMj != nil && *r.NodeEnergyMj != mockupEnergyMJ) {
				t.Errorf("seq %d: Redfish node power %d mW, energy %v mJ; want 6543000 and %d", r.Seq, r.GetNodePowerMw(), r.NodeEnergyMj, uint64(mockupEnergyMJ))
			}
		case telemetry.NodePowerSource_NODE_POWER_MODEL:
			if r.NodePowerMw == nil || *r.NodePowerMw != modelMW(r) || r.NodeEnergyMj != nil {
				t.Errorf("seq %d: model node power %v, want %d and no energy", r.Seq, r.NodePowerMw, modelMW(r))
			}
		default:
			t.Errorf("seq %d: node power source %v (the model is always there)", r.Seq, r.NodePowerSource)
		}
		if r.CpuPowerMw != nil {
			t.Errorf("seq %d: CPU power without RAPL", r.Seq)
		}
	}
	if withEnergy < 3 {
		t.Errorf("%d Redfish reports with the energy counter, want >= 3", withEnergy)
	}
	if bySource[telemetry.NodePowerSource_NODE_POWER_MODEL] < 5 {
		t.Errorf("%d reports fell back to the model, want >= 5 (BMC busy and hung)", bySource[telemetry.NodePowerSource_NODE_POWER_MODEL])
	}
	if m := maxConc; m != 1 {
		t.Errorf("the BMC saw %d concurrent requests, want 1", m)
	}
	if busy := counterSum(t, reg, "megawatch_collector_node_power_errors_total", map[string]string{"source": "redfish", "kind": "busy"}); busy < 1 {
		t.Errorf("busy errors %v", busy)
	}
	if w := counterSum(t, reg, "megawatch_collector_node_power_windows_total", map[string]string{"source": "redfish"}); w < 5 {
		t.Errorf("windows_total{source=redfish} = %v", w)
	}
}

// counterSum sums the counter name over the series whose labels include
// every label=value of want.
func counterSum(t *testing.T, g prometheus.Gatherer, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// unpackSysfs writes the sysfs fixture of collector/nodepower (a DGX-like
// host with the ACPI power meter and RAPL) under a temp dir.
func unpackSysfs(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("nodepower", "testdata", "sys-h100.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var path string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "-- ") && strings.HasSuffix(line, " --") {
			path = filepath.Join(root, strings.TrimSuffix(strings.TrimPrefix(line, "-- "), " --"))
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if path != "" && line != "" {
			if err := os.WriteFile(path, []byte(line+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// TestInBandNodePowerInReports: hwmon's power meter is the node figure
// (source HWMON) and RAPL's package + DRAM counters, advancing while the
// collector runs, are the CPU component.
func TestInBandNodePowerInReports(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	root := unpackSysfs(t)
	cfg := fastConfig()
	cfg.NodePower.Sources = []string{nodepower.SourceHwmon}
	cfg.NodePower.Hwmon.SysfsRoot = root
	cfg.NodePower.Hwmon.Timeout = 100 * time.Millisecond
	cfg.NodePower.RAPL.Enabled, cfg.NodePower.RAPL.SysfsRoot = true, root
	cfg.NodePower.RAPL.Timeout = 100 * time.Millisecond

	// Package 0's counter advances (written atomically, by rename).
	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		zone := filepath.Join(root, "class", "powercap", "intel-rapl:0")
		uj := uint64(100_000_000)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			uj += 2_000_000 // 2 J per 10 ms: ≈ 200 W, whatever the timing
			tmp := filepath.Join(zone, "energy_uj.tmp")
			if os.WriteFile(tmp, []byte(strconv.FormatUint(uj, 10)+"\n"), 0o644) == nil {
				_ = os.Rename(tmp, filepath.Join(zone, "energy_uj"))
			}
		}
	}()
	defer func() { close(stop); <-writerDone }()

	run := startCollector(t, cfg, newMockNode(time.Now), collectorConn(t, srv.URL()))
	waitFor(t, "reports with CPU power", 30*time.Second, func() bool {
		for _, r := range streamReports(t, srv.URL()) {
			if r.CpuPowerMw != nil && *r.CpuPowerMw > 0 {
				return true
			}
		}
		return false
	})
	run.stop(t)
	hw := 0
	for _, r := range streamReports(t, srv.URL()) {
		switch r.NodePowerSource {
		case telemetry.NodePowerSource_NODE_POWER_HWMON:
			hw++
			if r.GetNodePowerMw() != 6_512_345 || r.NodeEnergyMj != nil {
				t.Errorf("seq %d: hwmon node power %d mW, want 6512345 (power1_average 6512345000 µW)", r.Seq, r.GetNodePowerMw())
			}
		case telemetry.NodePowerSource_NODE_POWER_NONE:
			if r.NodePowerMw != nil {
				t.Errorf("seq %d: node power without a source", r.Seq)
			}
		default:
			t.Errorf("seq %d: source %v", r.Seq, r.NodePowerSource)
		}
	}
	if hw == 0 {
		t.Error("no report with hwmon node power")
	}
}

func TestNodePowerConfigErrorsNameTheKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	yaml := `
node_power:
  sources: [redfish, ipmi]
  redfish: {url: "https://bmc", timeout: 5s}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("no error")
	}
	for _, key := range []string{"node_power.sources[1]:", "node_power.redfish.timeout:"} {
		if !strings.Contains(err.Error(), path+": "+key) {
			t.Errorf("error does not name %s with the file:\n%v", key, err)
		}
	}
}
