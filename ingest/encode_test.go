package ingest

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/megawatch/megawatch/internal/telemetry"
)

var defaultLevels = []string{"site", "hall", "row", "rack"}

func TestEncodeReport(t *testing.T) {
	end := time.Unix(1_700_000_000, 0)
	f := func(name string, r *telemetry.NodeReport, want ...string) {
		t.Helper()
		e := newLPEncoder(defaultLevels)
		n, err := e.report(r, true)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := strings.Split(strings.TrimSuffix(string(e.buf()), "\n"), "\n")
		if n != len(got) {
			t.Errorf("%s: %d lines reported, %d written", name, n, len(got))
		}
		for i := range max(len(got), len(want)) {
			var g, w string
			if i < len(got) {
				g = got[i]
			}
			if i < len(want) {
				w = want[i]
			}
			if g != w {
				t.Errorf("%s: line %d:\n got %s\nwant %s", name, i, g, w)
			}
		}
	}
	loc := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "n1"}
	r := testReport(loc, 3, end, 1)
	f("one gpu", r,
		"node,hall=h1,node=n1,rack=k01,row=r01,site=dc1 gpus=1i,gpus_healthy=1i,power_max_w=509,power_w=500.003 1700000000000000000",
		"gpu,gpu=0,hall=h1,node=n1,rack=k01,row=r01,site=dc1 energy_mj=3000i,healthy=true,mem_temp_c=70,power_limit_w=700,power_max_w=600.003,power_min_w=400.003,power_w=500.003,sm_clock_mhz=1980,temp_c=60,throttle_reasons=4i,util_pct=90 1700000000000000000")
	lost := &telemetry.NodeReport{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "n1", WindowEndUnixNs: end.UnixNano(),
		Gpus: []*telemetry.Gpu{{Index: 0, Health: telemetry.Health_HEALTH_LOST}, {Index: 1, PowerMw: u32(250_500)}}}
	f("lost gpu and absent fields", lost,
		"node,hall=h1,node=n1,rack=k01,row=r01,site=dc1 gpus=2i,gpus_healthy=1i,power_w=250.5 1700000000000000000",
		`gpu,gpu=0,hall=h1,node=n1,rack=k01,row=r01,site=dc1 health="lost",healthy=false 1700000000000000000`,
		"gpu,gpu=1,hall=h1,node=n1,rack=k01,row=r01,site=dc1 healthy=true,power_w=250.5 1700000000000000000")
	kinds := &telemetry.NodeReport{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "n1", WindowEndUnixNs: end.UnixNano(),
		NodePowerMw: u32(6_543_210), NodePowerSource: telemetry.NodePowerSource_NODE_POWER_REDFISH, CpuPowerMw: u32(700_500), NodeEnergyMj: u64(123456789),
		Gpus: []*telemetry.Gpu{{Index: 0, Health: telemetry.Health_HEALTH_TIMEOUT, EnergyMj: u64(5)}, {Index: 1, Health: telemetry.Health_HEALTH_ERROR}, {Index: 2, Health: telemetry.Health(9)}}}
	f("health kinds and node power", kinds,
		`node,hall=h1,node=n1,rack=k01,row=r01,site=dc1 cpu_power_w=700.5,gpus=3i,gpus_healthy=0i,node_energy_mj=123456789i,node_power_source="redfish",node_power_w=6543.21 1700000000000000000`,
		`gpu,gpu=0,hall=h1,node=n1,rack=k01,row=r01,site=dc1 energy_mj=5i,health="timeout",healthy=false 1700000000000000000`,
		`gpu,gpu=1,hall=h1,node=n1,rack=k01,row=r01,site=dc1 health="error",healthy=false 1700000000000000000`,
		`gpu,gpu=2,hall=h1,node=n1,rack=k01,row=r01,site=dc1 health="unknown",healthy=false 1700000000000000000`)
	model := &telemetry.NodeReport{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "n1", WindowEndUnixNs: end.UnixNano(),
		NodePowerMw: u32(0), NodePowerSource: telemetry.NodePowerSource_NODE_POWER_MODEL}
	f("node power 0 W is present, not absent", model,
		`node,hall=h1,node=n1,rack=k01,row=r01,site=dc1 gpus=0i,gpus_healthy=0i,node_power_source="model",node_power_w=0 1700000000000000000`)
}

func TestEncodeRollupAndAlert(t *testing.T) {
	end := time.Unix(1_700_000_000, 0).UnixNano()
	e := newLPEncoder([]string{"site", "hall", "pdu", "row", "rack"})
	ramp := -2e6
	tmax, mmax := int32(83), int32(91)
	r := &telemetry.Rollup{Level: "pdu", Path: []string{"dc1", "h1", "p1"}, WindowEndUnixNs: end, PowerW: 3e6, PowerEstW: 3.1e6,
		PowerMaxW: 3.2e6, CapacityW: 5e6, NodesReporting: 9, NodesExpected: 10, RampWPerS: &ramp,
		StaleNodes: 1, ThrottledGpus: 3, Gpus: 80, GpusHealthy: 78, GpuTempMaxC: &tmax, MemTempMaxC: &mmax}
	if _, err := e.rollup("pdu", r.Path, r); err != nil {
		t.Fatal(err)
	}
	a := &telemetry.AlertEvent{Rule: "hall_power", Severity: "page", Level: "hall", Domain: "dc1/h1", State: telemetry.AlertState_ALERT_STATE_FIRING,
		Value: 41.5, Threshold: 40, Message: `hall h1 at 41.5 MW, "over"`, AtUnixNs: end}
	if _, err := e.alert("page", "hall_power", a); err != nil {
		t.Fatal(err)
	}
	want := "rollup,hall=h1,level=pdu,pdu=p1,site=dc1 capacity_mw=5,coverage=0.9,degraded=false,gpu_temp_max_c=83,gpus=80i,gpus_healthy=78i,headroom_mw=1.9,lag_ms=0i,mem_temp_max_c=91,nodes_expected=10i,nodes_reporting=9i,power_est_mw=3.1,power_max_mw=3.2,power_mw=3,ramp_mw_per_s=-2,stale_nodes=1i,throttled_gpus=3i 1700000000000000000\n" +
		`alert,domain=dc1/h1,level=hall,rule=hall_power,severity=page message="hall h1 at 41.5 MW, \"over\"",state="firing",threshold=40,value=41.5 1700000000000000000` + "\n"
	if got := string(e.buf()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestEncodeParses checks that what we encode is what InfluxDB's parser reads back.
func TestEncodeParses(t *testing.T) {
	e := newLPEncoder(defaultLevels)
	for i := range 20 {
		if _, err := e.report(testReport(testLoc(i), uint64(i+1), time.Unix(1_700_000_000, 0), 8), true); err != nil {
			t.Fatal(err)
		}
	}
	if n := countParsed(t, e.buf()); n != 20*9 {
		t.Fatalf("parsed %d points, want %d", n, 20*9)
	}
}

func countParsed(t testing.TB, buf []byte) int {
	t.Helper()
	dec := lineprotocol.NewDecoderWithBytes(buf)
	n := 0
	for dec.Next() {
		if _, err := dec.Measurement(); err != nil {
			t.Fatalf("measurement: %v", err)
		}
		for {
			k, _, err := dec.NextTag()
			if err != nil {
				t.Fatalf("tag: %v", err)
			}
			if k == nil {
				break
			}
		}
		for {
			k, v, err := dec.NextField()
			if err != nil {
				t.Fatalf("field: %v in %q", err, buf)
			}
			if k == nil {
				break
			}
			if v.Kind() == lineprotocol.Float && (math.IsNaN(v.FloatV()) || math.IsInf(v.FloatV(), 0)) {
				t.Fatalf("non-finite float")
			}
		}
		if _, err := dec.Time(lineprotocol.Nanosecond, time.Time{}); err != nil {
			t.Fatalf("time: %v", err)
		}
		n++
	}
	return n
}

// BenchmarkEncode: ns and allocations per point of a full 8-GPU report,
// ingest's hot path against line-protocol/v2's Encoder alone (every key and
// tag through AddTag/AddField, the baseline) in the same run.
func BenchmarkEncode(b *testing.B) {
	r := testReport(testLoc(1), 42, time.Unix(1_700_000_000, 0), 8)
	b.Run("encoder=megawatch", func(b *testing.B) {
		e := newLPEncoder(defaultLevels)
		e.reset(make([]byte, 0, 1<<20))
		b.ReportAllocs()
		points := 0
		for b.Loop() {
			if len(e.buf()) > 1<<19 {
				e.reset(e.buf())
			}
			n, _ := e.report(r, true)
			points += n
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(points), "ns/point")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("encoder=line-protocol-v2", func(b *testing.B) {
		var e lineprotocol.Encoder
		e.SetBuffer(make([]byte, 0, 1<<20))
		b.ReportAllocs()
		points := 0
		for b.Loop() {
			if len(e.Bytes()) > 1<<19 {
				e.Reset()
			}
			refAppend(&e, r, true)
			points += 1 + len(r.Gpus)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(points), "ns/point")
		b.ReportMetric(0, "ns/op")
	})
}
