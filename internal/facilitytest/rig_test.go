package facilitytest

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/collector/nodepower/bmctest"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters"
	"github.com/megawatch/megawatch/meters/modbus"
)

// The scenario runs on the wall clock with short windows; every figure is
// placed by its window (event time), and every wait polls with a generous
// deadline, so a loaded machine only makes it slower.
const (
	window     = 500 * time.Millisecond
	slot       = 50 * time.Millisecond
	staleAfter = 3
	// grace: how long after a window's end the aggregator waits for its
	// reports. Long, so that a starved collector, publisher or poller on a
	// busy 2-core machine is not late (a late report would be held, which
	// keeps the sums but shifts the stale windows).
	grace = 2 * time.Second
	// waitFor is the deadline of each wait for an outcome.
	waitFor = 45 * time.Second
)

// Node kinds: how a node's node power is made.
const (
	kindRedfish  = "redfish"  // real collector, node power from the Redfish BMC
	kindHwmon    = "hwmon"    // real collector, node power from the ACPI power meter (sysfs fixture)
	kindModel    = "model"    // real collector, node power from the collector's model
	kindMeasured = "measured" // test publisher, node_power_mw with source REDFISH
	kindNone     = "none"     // test publisher, no node power: the aggregator models it
)

// nodeSpec is what one node draws, in integral watts, so that every sum of
// it is exact in float64.
type nodeSpec struct {
	name  string
	kind  string
	gpus  int
	gpuW  int64 // per GPU
	nodeW int64 // the node-power figure the aggregator should use for it
}

func (n nodeSpec) real() bool {
	return n.kind == kindRedfish || n.kind == kindHwmon || n.kind == kindModel
}

// modeled: the node figure is an estimate (the collector's model or the
// aggregator's).
func (n nodeSpec) modeled() bool { return n.kind == kindModel || n.kind == kindNone }

// Served values.
const (
	simGPUW     = 70   // the simulated H100's idle power, no job
	redfishW    = 5400 // the BMC's chassis power
	hwmonW      = 5200 // the ACPI power meter's power1_average
	testGPUW    = 500  // the published nodes' GPUs
	measuredW   = 7000 // the published nodes' measured node power (rk03, rk04)
	gpusPerNode = 8
)

// collectorModel is the collector's model for the simulated DGX H100
// (nodepower's dgxh100 node type: 1500 W host + 387.5 W per GPU).
func collectorModel(t testing.TB) (host, perGPU float64) {
	nt, ok := nodepower.LookupNodeType("dgxh100")
	if !ok {
		t.Fatal("nodepower has no dgxh100 node type")
	}
	return nt.HostW, nt.PerGPUW
}

// modelW is host + perGPU × gpus + GPU power, checked to be integral.
func modelW(t testing.TB, host, perGPU float64, gpus int, gpuW int64) int64 {
	w := host + perGPU*float64(gpus) + float64(gpus)*float64(gpuW)
	if w != math.Trunc(w) {
		t.Fatalf("model figure %v W is not integral: the scenario's sums would not be exact", w)
	}
	return int64(w)
}

// hallNodes are the scenario's nodes (they must match testdata/hall.yaml).
func hallNodes(t testing.TB) []nodeSpec {
	host, per := collectorModel(t)
	aggHost, aggPer := aggregatorModel(t)
	ns := []nodeSpec{
		{name: "n-redfish", kind: kindRedfish, gpus: gpusPerNode, gpuW: simGPUW, nodeW: redfishW},
		{name: "n-hwmon", kind: kindHwmon, gpus: gpusPerNode, gpuW: simGPUW, nodeW: hwmonW},
		{name: "n-model", kind: kindModel, gpus: gpusPerNode, gpuW: simGPUW, nodeW: modelW(t, host, per, gpusPerNode, simGPUW)},
	}
	for i := 1; i <= 4; i++ {
		ns = append(ns, nodeSpec{name: fmt.Sprintf("t-rk02-%d", i), kind: kindNone, gpus: gpusPerNode, gpuW: testGPUW,
			nodeW: modelW(t, aggHost, aggPer, gpusPerNode, testGPUW)})
	}
	for i := 1; i <= 3; i++ {
		ns = append(ns, nodeSpec{name: fmt.Sprintf("t-rk03-%d", i), kind: kindMeasured, gpus: gpusPerNode, gpuW: testGPUW, nodeW: measuredW})
	}
	for i := 1; i <= 4; i++ {
		ns = append(ns, nodeSpec{name: fmt.Sprintf("t-rk04-%d", i), kind: kindMeasured, gpus: gpusPerNode, gpuW: testGPUW, nodeW: measuredW})
	}
	return ns
}

// hall is the running scenario.
type hall struct {
	t     *testing.T
	topo  *topology.Topology
	nodes map[string]nodeSpec

	nats *testenv.NATSServer
	nc   *nats.Conn
	js   jetstream.JetStream
	snmp *testenv.SNMPD
	mbus *testenv.ModbusServer
	am   *testenv.Alertmanager
	bmc  *bmctest.BMC
	// sysfs is n-hwmon's fixture tree.
	sysfs string

	rollups *recorder
	meterRx *meterLog
	nodeRx  *nodeLog
	pub     *publisher
	engine  *alerts.Engine
	cfg     alerts.Config // the engine's config

	mu         sync.Mutex
	collectors map[string]*runningCollector
}

// hallOptions choose what startHall runs.
type hallOptions struct {
	// noMeters: no snmpd, pymodbus or meters poller (the meters in the
	// topology point nowhere and nobody reads them).
	noMeters bool
	// rules are the engine's rules; without, it runs the default rules,
	// no Alertmanager is started and the engine notifies only its log.
	rules func(*hall) []rules.Rule
}

// startHall starts every server and component of the scenario: nats-server,
// snmpd, pymodbus, Alertmanager, the BMC, the meters poller, the real
// collectors, the test publisher and the alerts engine.
func startHall(t *testing.T, o hallOptions) *hall {
	t.Helper()
	testenv.Short(t)
	h := &hall{t: t, nodes: map[string]nodeSpec{}, collectors: map[string]*runningCollector{}}
	for _, n := range hallNodes(t) {
		h.nodes[n.name] = n
	}
	h.nats = testenv.StartNATSServer(t)
	snmpAddr, modbusAddr := "127.0.0.1:1", "127.0.0.1:2"
	secrets := t.TempDir()
	community, auth, priv := filepath.Join(secrets, "community"), filepath.Join(secrets, "auth"), filepath.Join(secrets, "priv")
	if !o.noMeters {
		h.snmp = testenv.StartSNMPD(t)
		h.mbus = testenv.StartModbusServer(t)
		snmpAddr, modbusAddr = h.snmp.Addr, h.mbus.Addr
		for p, v := range map[string]string{community: h.snmp.Community, auth: h.snmp.V3.AuthPass, priv: h.snmp.V3.PrivPass} {
			if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	if o.rules != nil {
		h.am = testenv.StartAlertmanager(t, "route:\n  receiver: devnull\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: devnull\n")
	}
	h.bmc = bmctest.New(t)
	h.bmc.SetPowerW(redfishW)
	h.sysfs = unpackTree(t, filepath.Join("testdata", "sysfs-node.txtar"))

	raw, err := os.ReadFile(filepath.Join("testdata", "hall.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.NewReplacer("@SNMP@", snmpAddr, "@MODBUS@", modbusAddr, "@COMMUNITY@", community, "@AUTH@", auth, "@PRIV@", priv).Replace(string(raw))
	if h.topo, err = topology.Parse([]byte(doc), "testdata/hall.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, n := range h.topo.Nodes() {
		if _, ok := h.nodes[n.Name]; !ok {
			t.Fatalf("topology node %s has no spec", n.Name)
		}
	}
	if len(h.nodes) != h.topo.NumNodes() {
		t.Fatalf("%d node specs, %d topology nodes", len(h.nodes), h.topo.NumNodes())
	}

	h.nc = connect(t, h.nats.URL, "facilitytest")
	js, err := jetstream.New(h.nc)
	if err != nil {
		t.Fatal(err)
	}
	h.js = js
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc := natsx.DefaultStreamsConfig()
	for _, c := range []jetstream.StreamConfig{sc.PowerStream(), sc.MeterStream(), sc.RollupStream()} {
		if _, err := natsx.EnsureStream(ctx, js, c); err != nil {
			t.Fatal(err)
		}
	}
	h.rollups = newRecorder(t, connect(t, h.nats.URL, "facilitytest rollups"))
	h.meterRx = newMeterLog(t, connect(t, h.nats.URL, "facilitytest meters"))
	h.nodeRx = newNodeLog(t, connect(t, h.nats.URL, "facilitytest nodes"))

	// The engine first: it reads its input from the streams from its
	// start on.
	h.cfg = h.engineConfig()
	if o.rules != nil {
		h.cfg.Rules = o.rules(h)
	}
	h.startEngine(h.cfg)
	if !o.noMeters {
		h.startMeters()
	}
	for _, n := range h.topo.Nodes() {
		if h.nodes[n.Name].real() {
			h.startCollector(t, n.Name)
		}
	}
	h.pub = startPublisher(t, h.js, h.topo, h.nodes)
	return h
}

func connect(t testing.TB, url, name string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// engineConfig is the aggregator's configuration for the scenario: its
// windows, and Alertmanager as the notifier.
func (h *hall) engineConfig() alerts.Config {
	cfg := alerts.DefaultConfig()
	cfg.NATS.Servers = []string{h.nats.URL}
	cfg.Window, cfg.Slot, cfg.StaleAfter, cfg.Grace = window, slot, staleAfter, grace
	cfg.AnalysisWindow = 2 * time.Second
	cfg.HTTPAddr = ""
	cfg.Replica = "facilitytest"
	cfg.LagAlertAfter = 0
	cfg.Notifiers.Alertmanager.URLsEnv = ""
	if h.am != nil {
		cfg.Notifiers.Alertmanager.URLs = []string{h.am.URL}
		cfg.Notifiers.Alertmanager.ResendInterval = 2 * time.Second
	} else {
		cfg.Notifiers.LogOnly = true
	}
	cfg.Notifiers.Log.Enabled = false
	setAggregatorModel(&cfg)
	return cfg
}

func (h *hall) startEngine(cfg alerts.Config) {
	t := h.t
	var logBuf syncWriter
	e, err := alerts.New(cfg, h.topo, connect(t, h.nats.URL, "facilitytest alerts"), slog.New(slog.NewTextHandler(&logBuf, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("alerts engine: %v", err)
	}
	h.engine = e
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("alerts engine: %v", err)
		}
		if t.Failed() {
			t.Logf("alerts engine log:\n%s", logBuf.tail(8000))
		}
	})
}

// startMeters runs the real `megawatch meters` poller over the topology's
// meters, one window per aggregator window.
func (h *hall) startMeters() {
	t := h.t
	cfg := meters.DefaultConfig()
	cfg.Interval, cfg.Timeout, cfg.BackoffMax = window, 400*time.Millisecond, window
	cfg.Workers, cfg.Poller, cfg.MetricsAddr = 4, "facilitytest", ""
	var logBuf syncWriter
	p, err := meters.New(cfg, h.topo, h.js, slog.New(slog.NewTextHandler(&logBuf, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("meters poller: %v", err)
	}
	if p.Meters() != len(h.topo.Meters()) {
		t.Fatalf("poller reads %d meters, topology has %d", p.Meters(), len(h.topo.Meters()))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("meters poller: %v", err)
		}
		if t.Failed() {
			t.Logf("meters poller log:\n%s", logBuf.tail(4000))
		}
	})
}

// serveMeter makes meter name serve w watts: the raw value its protocol
// carries (the preset's or register's scale undone), exactly.
func (h *hall) serveMeter(t testing.TB, name string, w int64) {
	t.Helper()
	m, ok := h.topo.Meter(name)
	if !ok {
		t.Fatalf("no meter %s", name)
	}
	switch {
	case m.SNMP != nil:
		raw := float64(w) / m.SNMP.Power.Scale
		if raw != math.Trunc(raw) {
			t.Fatalf("meter %s: %d W is not a whole number of %v W", name, w, m.SNMP.Power.Scale)
		}
		h.snmp.Set(m.SNMP.Power.OID, "integer", int64(raw))
		if m.SNMP.Energy != nil {
			h.snmp.Set(m.SNMP.Energy.OID, "gauge", 1000)
		}
	case m.Modbus != nil:
		raw := float64(w) / m.Modbus.Power.Scale
		regs := modbus.Encode(raw, m.Modbus.Power)
		if got, err := modbus.Decode(regs, m.Modbus.Power); err != nil || got != float64(w) {
			t.Fatalf("meter %s: %d W does not round-trip its register type %s (%v, %v)", name, w, m.Modbus.Power.Type, got, err)
		}
		if m.Modbus.Power.Function == "input" {
			h.mbus.SetInput(m.Modbus.Power.Address, regs...)
		} else {
			h.mbus.SetHolding(m.Modbus.Power.Address, regs...)
		}
	}
}

// silenceSNMPMeter removes a PDU's objects from the agent: it answers
// noSuchObject, so the poller reports the meter stale.
func (h *hall) silenceSNMPMeter(name string) {
	m, _ := h.topo.Meter(name)
	h.snmp.Unset(m.SNMP.Power.OID)
	if m.SNMP.Energy != nil {
		h.snmp.Unset(m.SNMP.Energy.OID)
	}
}

// runningCollector is one real collector.
type runningCollector struct {
	cancel context.CancelFunc
	done   chan error
	log    *syncWriter
}

// collectorConfig is a real collector for node over simulated H100s with no
// job (every GPU idle at 70 W) and the node's node-power source. The
// simulated GPUs have no energy counter (fault not_supported, as on GPUs
// without one): the window's mean power is the mean of the 10 Hz instants,
// exactly 70 W, so that the sums stay exact (the energy counter's
// millijoule steps would add ±2 mW per window).
func (h *hall) collectorConfig(t testing.TB, node string) (collector.Config, telemetry.Location) {
	n, ok := h.topo.Node(node)
	if !ok {
		t.Fatalf("no node %s", node)
	}
	cfg := collector.DefaultConfig()
	cfg.NATS.Servers = []string{h.nats.URL}
	cfg.Node = node
	cfg.Location = &collector.LocationConfig{Site: n.Location.Site, Hall: n.Location.Hall, Row: n.Location.Row, Rack: n.Location.Rack}
	cfg.Window, cfg.Slot, cfg.CallTimeout = window, slot, 200*time.Millisecond
	cfg.MetricsAddr = ""
	cfg.Sim.Jobs = nil
	cfg.Sim.Noise, cfg.Sim.Variation = 0, 0
	cfg.Sim.NodePower = sim.NodePowerNone
	cfg.Sim.Faults = []sim.Fault{{Node: "*", Kind: sim.FaultNotSupported, GPU: -1, Field: sim.FieldEnergy}}
	np := nodepower.DefaultConfig()
	switch k := h.nodes[node].kind; k {
	case kindRedfish:
		np.Sources = []string{nodepower.SourceRedfish}
		np.Redfish.URL = h.bmc.URL()
		np.Redfish.CAFile = h.bmc.CAFile(t)
		np.Redfish.Timeout = 400 * time.Millisecond
	case kindHwmon:
		np.Sources = []string{nodepower.SourceHwmon}
		np.Hwmon.SysfsRoot = h.sysfs
	case kindModel:
		np.Sources = []string{nodepower.SourceModel}
		np.Model.NodeType = "dgxh100"
	default:
		t.Fatalf("node %s (%s) has no collector", node, k)
	}
	cfg.NodePower = np
	return cfg, n.Location
}

// startCollector runs node's real collector until stopCollector or the end
// of the test.
func (h *hall) startCollector(t testing.TB, node string) {
	t.Helper()
	cfg, loc := h.collectorConfig(t, node)
	dev, err := sim.New(cfg.Sim, loc, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	logBuf := &syncWriter{}
	c, err := collector.New(cfg, dev, loc, connect(t, h.nats.URL, "facilitytest "+node), slog.New(slog.NewTextHandler(logBuf, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("collector %s: %v", node, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningCollector{cancel: cancel, done: make(chan error, 1), log: logBuf}
	go func() { rc.done <- c.Run(ctx) }()
	h.mu.Lock()
	if h.collectors[node] != nil {
		h.mu.Unlock()
		t.Fatalf("collector %s already running", node)
	}
	h.collectors[node] = rc
	h.mu.Unlock()
	h.t.Cleanup(func() {
		h.stopCollector(node)
		if h.t.Failed() {
			h.t.Logf("collector %s log:\n%s", node, logBuf.tail(3000))
		}
	})
}

// stopCollector stops node's collector (it flushes and exits).
func (h *hall) stopCollector(node string) {
	h.mu.Lock()
	rc := h.collectors[node]
	delete(h.collectors, node)
	h.mu.Unlock()
	if rc == nil {
		return
	}
	rc.cancel()
	if err := <-rc.done; err != nil {
		h.t.Errorf("collector %s: %v", node, err)
	}
}

// syncWriter is a log buffer that components write to from many goroutines.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() > 1<<20 {
		w.b.Reset()
	}
	return w.b.Write(p)
}

func (w *syncWriter) tail(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.b.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

// unpackTree writes a txtar-style fixture ("-- path --" headers) into a
// temp dir and returns it. (File names with ':' cannot live in a Go module,
// hence a txtar rather than a directory.)
func unpackTree(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var name string
	var body strings.Builder
	flush := func() {
		if name == "" {
			return
		}
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "-- ") && strings.HasSuffix(s, " --") {
			flush()
			name = strings.TrimSuffix(strings.TrimPrefix(s, "-- "), " --")
			body.Reset()
			continue
		}
		if name != "" {
			body.WriteString(line)
		}
	}
	flush()
	return root
}
