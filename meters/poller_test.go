package meters

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters/modbus"
)

// hallTopology is a hall with two rack PDUs on snmpd (v2c and v3) and a
// switchgear meter and a row's branch-circuit monitor on pymodbus.
func hallTopology(snmpAddr, modbusAddr string) string {
	return fmt.Sprintf(`
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h1
        capacity_kw: 500
        meters:
          - name: swgr-h1
            protocol: modbus
            address: %[2]s
            phase: L1-L3
            modbus:
              unit_id: 1
              power: {address: 3059, type: f32, scale: 1000}
              energy: {address: 3203, type: i64, function: input}
        children:
          - name: r01
            capacity_kw: 100
            meters:
              - name: bcm-r01
                protocol: modbus
                address: %[2]s
                modbus: {unit_id: 2, power: {address: 100, type: u32, word_order: little}}
            children:
              - name: rk[01-02]
                capacity_kw: 30
                nodes: ["n-{rack}"]
                meters:
                  - name: pdu-{rack}-a
                    protocol: snmp
                    address: %[1]s
                    feed: a
                    snmp: {community_env: MW_TEST_COMMUNITY, preset: raritan-pdu2-inlet}
              - name: rk03
                capacity_kw: 30
                nodes: [n-rk03]
                meters:
                  - name: pdu-rk03-b
                    protocol: snmp
                    address: %[1]s
                    feed: b
                    snmp:
                      version: "3"
                      user: megawatch
                      auth_protocol: SHA256
                      auth_password_env: MW_TEST_AUTH
                      priv_protocol: AES
                      priv_password_file: %[3]s
                      preset: apc-rpdu2-device
`, snmpAddr, modbusAddr, "PRIVFILE")
}

type rig struct {
	agent  *testenv.SNMPD
	mbus   *testenv.ModbusServer
	topo   *topology.Topology
	js     jetstream.JetStream
	stream jetstream.Stream
}

func newRig(t testing.TB) *rig {
	agent := testenv.StartSNMPD(t)
	mbus := testenv.StartModbusServer(t)
	priv := filepath.Join(t.TempDir(), "priv")
	if err := os.WriteFile(priv, []byte(agent.V3.PrivPass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MW_TEST_COMMUNITY", agent.Community)
	t.Setenv("MW_TEST_AUTH", agent.V3.AuthPass)
	doc := strings.Replace(hallTopology(agent.Addr, mbus.Addr), "PRIVFILE", priv, 1)
	topo, err := topology.Parse([]byte(doc), "hall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var url string
	if b, ok := t.(*testing.B); ok { // benchmarks: a nats-server process, so its CPU is not ours
		url = testenv.StartNATSServer(b).URL
	} else {
		url = natstest.RunServer(t).URL()
	}
	js := natstest.JetStream(t, natstest.Connect(t, url))
	ctx := context.Background()
	st, err := natsx.EnsureStream(ctx, js, natsx.DefaultStreamsConfig().MeterStream())
	if err != nil {
		t.Fatal(err)
	}
	return &rig{agent: agent, mbus: mbus, topo: topo, js: js, stream: st}
}

func testConfig(poller string) Config {
	c := DefaultConfig()
	c.Interval, c.Timeout, c.BackoffMax = 500*time.Millisecond, 300*time.Millisecond, time.Second
	c.Workers, c.Poller, c.MetricsAddr = 3, poller, ""
	return c
}

// serve sets every meter's value (raw, as the device holds it).
func (r *rig) serve(t testing.TB, raritanW, apcHundredthsKW int, swgrKW float32, bcmW uint32) {
	topo := r.topo
	for _, n := range []string{"pdu-rk01-a", "pdu-rk02-a"} {
		m, _ := topo.Meter(n)
		r.agent.Set(m.SNMP.Power.OID, "integer", raritanW)
		r.agent.Set(m.SNMP.Energy.OID, "gauge", 5000)
	}
	m, _ := topo.Meter("pdu-rk03-b")
	r.agent.Set(m.SNMP.Power.OID, "integer", apcHundredthsKW)
	r.agent.Set(m.SNMP.Energy.OID, "gauge", 4242)
	sw, _ := topo.Meter("swgr-h1")
	r.mbus.SetHolding(3059, modbus.Encode(float64(swgrKW), sw.Modbus.Power)...)
	r.mbus.SetInput(3203, modbus.Encode(123456789012, *sw.Modbus.Energy)...)
	bcm, _ := topo.Meter("bcm-r01")
	r.mbus.SetHolding(100, modbus.Encode(float64(bcmW), bcm.Modbus.Power)...)
}

// stored is every report in the stream, in order.
func (r *rig) stored(t testing.TB) []*telemetry.MeterReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := r.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*telemetry.MeterReport
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := r.stream.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var rep telemetry.MeterReport
		if err := proto.Unmarshal(raw.Data, &rep); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		path, meter, err := telemetry.ParseMeterSubject(raw.Subject)
		if err != nil || meter != rep.Meter || strings.Join(path, "/") != strings.Join(rep.Path, "/") {
			t.Fatalf("report %s/%s on subject %s (%v)", strings.Join(rep.Path, "/"), rep.Meter, raw.Subject, err)
		}
		if raw.Header.Get(telemetry.HeaderMsgID) != telemetry.MeterReportMsgID(&rep) {
			t.Fatalf("msg id %q", raw.Header.Get(telemetry.HeaderMsgID))
		}
		out = append(out, &rep)
	}
	return out
}

// waitFor polls the stream until cond holds for a report of meter newer than after.
func (r *rig) waitFor(t *testing.T, meter string, after time.Time, what string, cond func(*telemetry.MeterReport) bool) *telemetry.MeterReport {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, rep := range r.stored(t) {
			if rep.Meter == meter && rep.WindowEndUnixNs > after.UnixNano() && cond(rep) {
				return rep
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("meter %s: no report %s after %v", meter, what, after)
	return nil
}

func fresh(w float64) func(*telemetry.MeterReport) bool {
	return func(r *telemetry.MeterReport) bool { return !r.Stale && r.PowerW != nil && *r.PowerW == w }
}

// Two pollers (HA) read PDUs on snmpd (v2c and v3 authPriv) and a
// switchgear meter and a branch-circuit monitor on pymodbus: the stored
// reports carry exactly the served values after scale, one per meter and
// window; an agent killed makes its meters stale (no power, an error) while
// the Modbus meters stay fresh, and they recover when it is back.
func TestPollersEndToEnd(t *testing.T) {
	r := newRig(t)
	r.serve(t, 7345, 1234, 180.5, 23456)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	var wg sync.WaitGroup
	for i, name := range []string{"poller-a", "poller-b"} {
		p, err := New(testConfig(name), r.topo, r.js, slog.New(slog.DiscardHandler), regs[i])
		if err != nil {
			t.Fatal(err)
		}
		if p.Meters() != 5 {
			t.Fatalf("%d meters", p.Meters())
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Run(ctx) }()
	}
	start := time.Now()
	want := map[string]float64{"pdu-rk01-a": 7345, "pdu-rk02-a": 7345, "pdu-rk03-b": 12340, "swgr-h1": 180500, "bcm-r01": 23456}
	for meter, w := range want {
		rep := r.waitFor(t, meter, start, fmt.Sprintf("with %v W", w), fresh(w))
		m, _ := r.topo.Meter(meter)
		if rep.Level != m.Domain.Level || rep.WindowMs != 500 || rep.ReadUnixNs == 0 || rep.Error != "" || rep.Protocol != protocolOf(m) ||
			rep.Feed != m.Feed || rep.Phase != m.Phase || rep.WindowEndUnixNs%int64(500*time.Millisecond) != 0 {
			t.Fatalf("%s: report %v", meter, rep)
		}
	}
	sw := r.waitFor(t, "swgr-h1", start, "with energy", func(r *telemetry.MeterReport) bool { return r.EnergyWh != nil })
	if *sw.EnergyWh != 123456789012 {
		t.Fatalf("switchgear energy %v", *sw.EnergyWh)
	}
	v3 := r.waitFor(t, "pdu-rk03-b", start, "with energy", func(r *telemetry.MeterReport) bool { return r.EnergyWh != nil })
	if *v3.EnergyWh != 424200 {
		t.Fatalf("v3 energy %v", *v3.EnergyWh)
	}

	// New values are what the next reports carry.
	changed := time.Now()
	r.serve(t, 8000, 1500, 200.25, 30000)
	r.waitFor(t, "pdu-rk01-a", changed, "with 8000 W", fresh(8000))
	r.waitFor(t, "pdu-rk03-b", changed, "with 15000 W", fresh(15000))
	r.waitFor(t, "swgr-h1", changed, "with 200250 W", fresh(200250))

	// snmpd goes silent: its meters are stale, without power, with the
	// error; the Modbus meters keep reading.
	r.agent.Kill()
	killed := time.Now()
	stale := r.waitFor(t, "pdu-rk02-a", killed, "stale", func(r *telemetry.MeterReport) bool { return r.Stale })
	if stale.PowerW != nil || stale.EnergyWh != nil || stale.Error == "" || stale.ReadUnixNs == 0 {
		t.Fatalf("stale report %v: want no power, an error and the last read time", stale)
	}
	r.waitFor(t, "pdu-rk03-b", killed, "stale", func(r *telemetry.MeterReport) bool { return r.Stale && r.PowerW == nil })
	r.waitFor(t, "bcm-r01", time.Unix(0, stale.WindowEndUnixNs), "fresh while snmpd is down", fresh(30000))

	r.agent.Restart()
	back := time.Now()
	r.waitFor(t, "pdu-rk02-a", back, "fresh after restart", fresh(8000))
	r.waitFor(t, "pdu-rk03-b", back, "fresh after restart (v3)", fresh(15000))
	cancel()
	wg.Wait()

	// HA: one stored report per meter, window and freshness, though both
	// pollers published every window.
	seen := map[string]string{}
	for _, rep := range r.stored(t) {
		k := telemetry.MeterReportMsgID(rep)
		if prev, dup := seen[k]; dup {
			t.Fatalf("two stored reports for %s (pollers %s and %s)", k, prev, rep.Poller)
		}
		seen[k] = rep.Poller
	}
	var dupTotal float64
	for _, reg := range regs {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "megawatch_meters_reports_duplicate_total" {
				dupTotal += mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
	}
	if dupTotal == 0 {
		t.Fatal("no duplicate publishes counted: the two pollers did not publish the same windows")
	}
	if len(seen) < 5*4 {
		t.Fatalf("only %d meter windows stored", len(seen))
	}
}

// Bad credentials config names the topology file and the key, never a value.
func TestNewBadCredentials(t *testing.T) {
	doc := strings.Replace(hallTopology("127.0.0.1:1", "127.0.0.1:2"), "PRIVFILE", "/nonexistent/priv", 1)
	topo, err := topology.Parse([]byte(doc), "hall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MW_TEST_COMMUNITY", "")
	t.Setenv("MW_TEST_AUTH", "super-secret-auth")
	_, err = New(testConfig("x"), topo, nil, nil, nil)
	if err == nil {
		t.Fatal("missing credentials accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"hall.yaml: domains[0].children[0].children[0].children[0].meters[0].snmp.community_env: env var MW_TEST_COMMUNITY is not set",
		"hall.yaml: domains[0].children[0].children[0].children[1].meters[0].snmp.priv_password_file: open /nonexistent/priv",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "super-secret-auth") {
		t.Fatalf("error shows a secret:\n%s", msg)
	}
	// A scope without meters, and an unknown scope.
	t.Setenv("MW_TEST_COMMUNITY", "c")
	cfg := testConfig("x")
	cfg.Scope = "dc1.h9"
	if _, err := New(cfg, topo, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "dc1.h9") {
		t.Fatalf("unknown scope: %v", err)
	}
}

func TestConfigExampleAndValidate(t *testing.T) {
	c, err := LoadConfig(filepath.Join("..", "configs", "meters.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); fmt.Sprint(c) != fmt.Sprint(d) {
		t.Fatalf("configs/meters.yaml differs from the defaults:\n%+v\n%+v", c, d)
	}
	p := filepath.Join(t.TempDir(), "meters-bad.yaml")
	if err := os.WriteFile(p, []byte("interval: 50ms\ntimeout: 2s\nworkers: 0\nbackoff_max: 1ms\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(p)
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{p + ": line 5: unknown key bogus", p + ": interval: must be between", p + ": timeout: must be positive and below interval",
		p + ": workers: must be 1..10000", p + ": backoff_max: must be at least interval"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
