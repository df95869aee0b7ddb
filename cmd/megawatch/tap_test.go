package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/megawatch/megawatch/ingest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

func tapReport() *telemetry.NodeReport {
	return &telemetry.NodeReport{Site: "dc1", Hall: "h1", Row: "r01", Rack: "rk01", Node: "gpu-h1-r01-rk01-n01",
		WindowEndUnixNs: time.Date(2026, 11, 27, 1, 2, 3, 0, time.UTC).UnixNano(), WindowMs: 1000, SlotMs: 100,
		SlotPowerW: []uint32{5200, 5300}, Seq: 7, Replayed: true,
		Gpus: []*telemetry.Gpu{
			{Index: 0, PowerMw: proto.Uint32(650_500), TempC: proto.Int32(61)},
			{Index: 1, Health: telemetry.Health_HEALTH_LOST, Error: "power: ERROR_GPU_IS_LOST"},
		}}
}

func TestTapFormats(t *testing.T) {
	rep, _ := proto.Marshal(tapReport())
	roll, _ := proto.Marshal(&telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, PowerW: 12.5e6, CapacityW: 50e6, NodesReporting: 10, NodesExpected: 12})
	alert, _ := proto.Marshal(&telemetry.AlertEvent{Rule: "hall_power", Severity: "page", Domain: "dc1/h1", State: telemetry.AlertState_ALERT_STATE_FIRING, Value: 46})
	var hdr nats.Header
	f := func(subject string, data []byte, want ...string) {
		t.Helper()
		var b bytes.Buffer
		if err := printTapped(&b, subject, hdr, data, false); err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: output lacks %q:\n%s", subject, w, b.String())
			}
		}
		b.Reset()
		if err := printTapped(&b, subject, hdr, data, true); err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(b.Bytes(), &obj); err != nil || obj["subject"] != subject {
			t.Errorf("%s: JSON line %q: %v", subject, b.String(), err)
		}
	}
	f("megawatch.v1.power.dc1.h1.r01.rk01.gpu-h1-r01-rk01-n01", rep,
		"01:02:03.000 dc1/h1/r01/rk01/gpu-h1-r01-rk01-n01 seq=7 650 W", "gpus 1/2 ok replayed", "gpu0 ok power=650.5W temp=61C", "gpu1 lost err=")
	f("megawatch.v1.rollup.hall.dc1.h1", roll, "ROLLUP hall dc1/h1 12.500 MW", "nodes 10/12")
	f("megawatch.v1.alert.page.hall_power", alert, "ALERT FIRING", "hall_power/dc1/h1 value=46")
	f("megawatch.v1.power.a.b.c.d.e", []byte{0xff, 0xff}, "undecodable node_report")
	f("other.subject", []byte("x"), "other.subject: 1 bytes")
	// A dead letter shows why it was rejected, and the message as it was.
	hdr = nats.Header{}
	hdr.Set(telemetry.HeaderDeadReason, "location")
	hdr.Set(telemetry.HeaderDeadFrom, "megawatch.v1.power.dc1.h1.r01.rk01.other-node")
	hdr.Set(telemetry.HeaderDeadError, "report says gpu-h1-r01-rk01-n01")
	f("megawatch.v1.deadletter.location", rep, `DEADLETTER reason=location from=megawatch.v1.power.dc1.h1.r01.rk01.other-node error="report says gpu-h1-r01-rk01-n01"`,
		"gpu0 ok power=650.5W")
	// A field type conflict's dead letter holds the refused lines, as text.
	hdr = nats.Header{}
	hdr.Set(telemetry.HeaderDeadReason, "conflict")
	hdr.Set(telemetry.HeaderDeadFrom, "megawatch.v1.power.dc1.h1.r01.rk01.gpu-h1-r01-rk01-n01")
	hdr.Set(ingest.HeaderDeadFormat, "line-protocol")
	hdr.Set(ingest.HeaderDeadField, "gpu.power_w")
	hdr.Set(ingest.HeaderDeadTypes, "float (InfluxDB has string)")
	lp := "gpu,node=n1,gpu=0 power_w=650.5 1700000000000000000\ngpu,node=n1,gpu=1 power_w=640 1700000000000000000\n"
	f("megawatch.v1.deadletter.conflict", []byte(lp), "DEADLETTER reason=conflict", `field=gpu.power_w types="float (InfluxDB has string)", 2 refused lines`,
		"  gpu,node=n1,gpu=0 power_w=650.5 1700000000000000000")
	var b bytes.Buffer
	if err := printTapped(&b, "megawatch.v1.deadletter.conflict", hdr, []byte(lp), true); err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b.Bytes(), &obj); err != nil || obj["line_protocol"] != lp || obj["field"] != "gpu.power_w" || obj["decode_error"] != nil {
		t.Errorf("conflict dead letter as JSON: %s (%v)", b.String(), err)
	}
}

// TestTapAndCollectorSim runs `megawatch collector --sim` against an
// in-process server and reads its reports with `megawatch tap --json`.
func TestTapAndCollectorSim(t *testing.T) {
	testenv.Short(t)
	srv := natstest.RunServer(t)
	cfgPath := filepath.Join(t.TempDir(), "collector.yaml")
	cfg := "nats: {servers: [\"" + srv.URL() + "\"]}\nensure_stream: true\nwindow: 500ms\nslot: 50ms\ncall_timeout: 200ms\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var tapOut, tapErr, colErr bytes.Buffer
	var tapRunErr, colRunErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		tapRunErr = runTap(ctx, []string{"--nats", srv.URL(), "--json", "--count", "3"}, &tapOut, &tapErr)
		cancel()
	}()
	go func() {
		defer wg.Done()
		colRunErr = runCollector(ctx, []string{"--config", cfgPath, "--sim", "--sim-model", "dgxb200", "--metrics-addr", "127.0.0.1:0"}, &bytes.Buffer{}, &colErr)
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cancel()
		<-done
		t.Fatalf("tap saw no 3 reports; collector log:\n%s", colErr.String())
	}
	if tapRunErr != nil || colRunErr != nil {
		t.Fatalf("tap: %v, collector: %v\n%s", tapRunErr, colRunErr, colErr.String())
	}
	lines := strings.Split(strings.TrimSpace(tapOut.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("tap printed %d lines, want 3:\n%s", len(lines), tapOut.String())
	}
	for _, l := range lines {
		var obj struct {
			Subject string
			Type    string
			Data    struct {
				Node string
				Gpus []struct {
					Model   string
					PowerMw uint32 `json:"power_mw"`
				}
			}
		}
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if obj.Type != "node_report" || obj.Data.Node != "gpu-h1-r01-rk01-n01" || len(obj.Data.Gpus) != 8 || obj.Data.Gpus[0].PowerMw == 0 {
			t.Errorf("unexpected report: %s", l)
		}
	}
	// The reports are in the stream too (JetStream publish, not core).
	nc := natstest.Connect(t, srv.URL())
	s, err := natstest.JetStream(t, nc).Stream(context.Background(), telemetry.StreamPower)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil || info.State.Msgs < 3 {
		t.Errorf("stream holds %v messages (err %v), want >= 3", info.State.Msgs, err)
	}
}

func TestCollectorWithoutNVML(t *testing.T) {
	if ret := nvml.New().Init(); ret != nvml.ERROR_LIBRARY_NOT_FOUND {
		t.Skipf("this host has NVML (Init: %v)", ret)
	}
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"collector"}, &bytes.Buffer{}, &stderr)
	line := strings.TrimSpace(stderr.String())
	if code != 1 || strings.Contains(line, "\n") || !strings.Contains(line, "NVML library not found") || !strings.Contains(line, "--sim") {
		t.Errorf("exit %d, stderr %q; want one line about NVML and --sim", code, line)
	}
}

// TestTapNodePowerAndMeters: node power fields and meter reports, in text
// and --json.
func TestTapNodePowerAndMeters(t *testing.T) {
	r := tapReport()
	r.NodePowerMw, r.NodePowerSource, r.CpuPowerMw = proto.Uint32(10_234_500), telemetry.NodePowerSource_NODE_POWER_REDFISH, proto.Uint32(612_250)
	rep, _ := proto.Marshal(r)
	end := time.Date(2026, 11, 27, 1, 2, 4, 0, time.UTC).UnixNano()
	fresh, _ := proto.Marshal(&telemetry.MeterReport{Meter: "pdu-h1-r01-rk01-a", Level: "rack", Path: []string{"dc1", "h1", "r01", "rk01"},
		WindowEndUnixNs: end, WindowMs: 1000, PowerW: proto.Float64(7345.5), EnergyWh: proto.Float64(5000), Feed: "a",
		Protocol: telemetry.MeterProtocol_METER_PROTOCOL_SNMP, Seq: 3, Poller: "p1"})
	stale, _ := proto.Marshal(&telemetry.MeterReport{Meter: "swgr-h1", Level: "hall", Path: []string{"dc1", "h1"},
		WindowEndUnixNs: end, Stale: true, Error: "modbus: request timed out", ReadUnixNs: end - 5e9,
		Protocol: telemetry.MeterProtocol_METER_PROTOCOL_MODBUS, Seq: 9, Poller: "p2"})
	text := func(subject string, data []byte) string {
		t.Helper()
		var b bytes.Buffer
		if err := printTapped(&b, subject, nil, data, false); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	jsonOf := func(subject string, data []byte) map[string]any {
		t.Helper()
		var b bytes.Buffer
		if err := printTapped(&b, subject, nil, data, true); err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(b.Bytes(), &obj); err != nil {
			t.Fatalf("%s: %q: %v", subject, b.String(), err)
		}
		return obj
	}
	if got := text("megawatch.v1.power.dc1.h1.r01.rk01.gpu-h1-r01-rk01-n01", rep); !strings.Contains(got, "seq=7 650 W (slot max 5300 W) node 10234 W (redfish) cpu 612 W gpus 1/2") {
		t.Errorf("node report line lacks node power:\n%s", got)
	}
	obj := jsonOf("megawatch.v1.power.dc1.h1.r01.rk01.gpu-h1-r01-rk01-n01", rep)
	np, _ := obj["node_power"].(map[string]any)
	if np["node_power_w"] != 10234.5 || np["source"] != "redfish" || np["cpu_power_w"] != 612.25 {
		t.Errorf("node_power = %v", obj["node_power"])
	}
	if d, _ := obj["data"].(map[string]any); d["node_power_mw"] != 10234500.0 || d["node_power_source"] != "NODE_POWER_REDFISH" {
		t.Errorf("data lacks node power: %v", d)
	}
	// A report without node power has no node_power object and no "node" in its line.
	plain, _ := proto.Marshal(tapReport())
	if obj := jsonOf("megawatch.v1.power.a.b.c.d.e", plain); obj["node_power"] != nil {
		t.Errorf("node_power without a source: %v", obj["node_power"])
	}
	if got := text("megawatch.v1.power.a.b.c.d.e", plain); strings.Contains(got, " node ") {
		t.Errorf("line shows node power it has not: %s", got)
	}

	subj := "megawatch.v1.meter.dc1.h1.r01.rk01.pdu-h1-r01-rk01-a"
	if got := text(subj, fresh); got != "01:02:04.000 METER pdu-h1-r01-rk01-a dc1/h1/r01/rk01 feed=a 7345.5 W energy=5000 Wh snmp seq=3 poller=p1\n" {
		t.Errorf("meter line: %q", got)
	}
	obj = jsonOf(subj, fresh)
	if d, _ := obj["data"].(map[string]any); obj["type"] != "meter_report" || d["power_w"] != 7345.5 || d["meter"] != "pdu-h1-r01-rk01-a" || d["feed"] != "a" {
		t.Errorf("meter JSON: %v", obj)
	}
	got := text("megawatch.v1.meter.dc1.h1.swgr-h1", stale)
	if !strings.Contains(got, "METER swgr-h1 dc1/h1 - W STALE error=\"modbus: request timed out\" last_read=01:01:59.000 modbus seq=9") || strings.Contains(got, " 0 W") {
		t.Errorf("stale meter line: %q", got)
	}
	obj = jsonOf("megawatch.v1.meter.dc1.h1.swgr-h1", stale)
	if d, _ := obj["data"].(map[string]any); d["stale"] != true || d["power_w"] != nil {
		t.Errorf("stale meter JSON: %v", obj)
	}
	if got := text("megawatch.v1.meter.dc1.x", []byte{0xff}); !strings.Contains(got, "undecodable meter_report") {
		t.Errorf("bad meter report: %q", got)
	}
}
