package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
	"google.golang.org/protobuf/proto"
)

// `megawatch meters` polls a PDU on snmpd, publishes its reports to
// MEGAWATCH_METER, and serves /readyz and per-meter /metrics.
func TestMetersSubcommand(t *testing.T) {
	agent := testenv.StartSNMPD(t)
	srv := natstest.RunServer(t)
	dir := t.TempDir()
	topo := filepath.Join(dir, "topology.yaml")
	doc := fmt.Sprintf(`domains:
  - name: dc1
    capacity_kw: 100
    children:
      - name: h1
        capacity_kw: 50
        children:
          - name: r01
            capacity_kw: 10
            children:
              - name: rk01
                capacity_kw: 5
                nodes: [n1]
                meters:
                  - {name: pdu-rk01, protocol: snmp, address: %q, snmp: {community_file: %q, preset: apc-rpdu2-device}}
`, agent.Addr, filepath.Join(dir, "community"))
	for name, content := range map[string]string{"topology.yaml": doc, "community": agent.Community + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tp, err := topology.Load(topo)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := tp.Meter("pdu-rk01")
	agent.Set(m.SNMP.Power.OID, "integer", 4321)
	agent.Set(m.SNMP.Energy.OID, "gauge", 10)

	port := testenv.FreePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- runMeters(ctx, []string{"--topology", topo, "--nats", srv.URL(), "--poller", "t1",
			"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn"}, io.Discard, &logs)
	}()
	nc := natstest.Connect(t, srv.URL())
	sub, err := nc.SubscribeSync(telemetry.MeterWildcard)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(60 * time.Second)
	if err != nil {
		t.Fatalf("no meter report: %v\n%s", err, logs.String())
	}
	var rep telemetry.MeterReport
	if err := proto.Unmarshal(msg.Data, &rep); err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "megawatch.v1.meter.dc1.h1.r01.rk01.pdu-rk01" || rep.GetPowerW() != 43210 || rep.GetEnergyWh() != 1000 || rep.Poller != "t1" || rep.Stale {
		t.Fatalf("report on %s: %v", msg.Subject, &rep)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := testenv.WaitHTTP(base+"/readyz", http.StatusOK, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`megawatch_meters_polls_total{meter="pdu-rk01",protocol="snmp"}`, `megawatch_meters_stale{meter="pdu-rk01"} 0`, `megawatch_meters_power_watts{meter="pdu-rk01"} 43210`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(body), agent.Community) || strings.Contains(logs.String(), agent.Community) {
		t.Fatal("the community appears in metrics or logs")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("meters: %v", err)
	}

	// --probe reads each meter once and prints it; nothing is published.
	var probe bytes.Buffer
	if err := runMeters(context.Background(), []string{"--topology", topo, "--probe"}, &probe, io.Discard); err != nil {
		t.Fatalf("probe: %v\n%s", err, probe.String())
	}
	if !strings.Contains(probe.String(), "pdu-rk01") || !strings.Contains(probe.String(), "43210") || !strings.Contains(probe.String(), "dc1/h1/r01/rk01") {
		t.Fatalf("probe printed:\n%s", probe.String())
	}
	agent.Kill()
	probe.Reset()
	if err := runMeters(context.Background(), []string{"--topology", topo, "--probe"}, &probe, io.Discard); err == nil || !strings.Contains(err.Error(), "1 of 1 meters") {
		t.Fatalf("probe of a dead agent: %v\n%s", err, probe.String())
	}

	// check-config knows the meters config, and the shipped one is valid.
	var out bytes.Buffer
	if err := runCheckConfig(context.Background(), []string{"../../configs/meters.yaml"}, &out, &out); err != nil || !strings.Contains(out.String(), "(meters): ok") {
		t.Fatalf("check-config configs/meters.yaml: %v\n%s", err, out.String())
	}
}

// `megawatch meters --sim` on a topology without meters publishes a
// simulated PDU per rack and a switchgear meter per hall, which
// `megawatch tap --json` decodes; --probe --sim reads them once.
func TestMetersSimAndTap(t *testing.T) {
	testenv.Short(t)
	srv := natstest.RunServer(t)
	dir := t.TempDir()
	topo := filepath.Join(dir, "topology.yaml")
	cfg := filepath.Join(dir, "meters.yaml")
	files := map[string]string{topo: `domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h1
        capacity_kw: 500
        children:
          - name: r01
            capacity_kw: 100
            children:
              - name: rk[01-02]
                capacity_kw: 50
                nodes: ["gpu-{rack}-n[01-04]"]
`, cfg: "interval: 500ms\ntimeout: 300ms\nbackoff_max: 1s\nsim: {model: dgxb200}\n"}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var tapOut, logs bytes.Buffer
	tapDone := make(chan error, 1)
	go func() {
		tapDone <- runTap(ctx, []string{"--nats", srv.URL(), "--json", "--count", "6", telemetry.MeterWildcard}, &tapOut, io.Discard)
	}()
	metersDone := make(chan error, 1)
	go func() {
		metersDone <- runMeters(ctx, []string{"--config", cfg, "--topology", topo, "--nats", srv.URL(), "--sim", "--poller", "sim1",
			"--metrics-addr", "127.0.0.1:0"}, io.Discard, &logs)
	}()
	select {
	case err := <-tapDone:
		if err != nil {
			t.Fatal(err)
		}
	case err := <-metersDone:
		t.Fatalf("meters ended: %v\n%s", err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("tap saw no 6 meter reports:\n%s\n%s", tapOut.String(), logs.String())
	}
	cancel()
	if err := <-metersDone; err != nil {
		t.Fatalf("meters: %v\n%s", err, logs.String())
	}
	seen := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(tapOut.String()), "\n") {
		var obj struct {
			Subject, Type string
			Data          struct {
				Meter  string
				Level  string
				PowerW float64 `json:"power_w"`
				Poller string
			}
		}
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if obj.Type != "meter_report" || obj.Data.Poller != "sim1" {
			t.Errorf("line %s", l)
		}
		seen[obj.Data.Meter] = obj.Data.PowerW
	}
	// Four B200 nodes draw 4 × 3.7..14.3 kW; the hall meter adds 4 % and 700 W a node.
	for _, m := range []string{"pdu-dc1-h1-r01-rk01", "pdu-dc1-h1-r01-rk02"} {
		if w := seen[m]; w < 4*3700 || w > 4*14300 {
			t.Errorf("%s: %v W (seen %v)", m, w, seen)
		}
	}
	if w := seen["swgr-dc1-h1"]; w < 8*(3700*1.04+700) || w > 8*(14300*1.04+700) {
		t.Errorf("swgr-dc1-h1: %v W (seen %v)", w, seen)
	}
	var probe bytes.Buffer
	if err := runMeters(context.Background(), []string{"--config", cfg, "--topology", topo, "--sim", "--probe"}, &probe, io.Discard); err != nil ||
		!strings.Contains(probe.String(), "swgr-dc1-h1") || !strings.Contains(probe.String(), "sim") {
		t.Fatalf("probe --sim: %v\n%s", err, probe.String())
	}
	if err := runMeters(context.Background(), []string{"--sim-model", "dgxb200", "--probe"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--sim-model needs --sim") {
		t.Errorf("--sim-model without --sim: %v", err)
	}
}
