package grafana_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/powermodel"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// Facility power in the pipeline fill: what `megawatch meters` publishes
// for every meter of configs/topology.yaml, and facility rollups.

// staleMeterName is the meter whose poller cannot reach it in the fills:
// every window has a stale report for it and no fresh one.
func staleMeterName(topo *topology.Topology) string {
	ms := topo.Meters()
	return ms[len(ms)-1].Name
}

// meterLoss is what a fill's meter reads beyond the node power of its
// domain: distribution losses and non-IT load, 8 %.
const meterLoss = 1.08

// meterPowerW is what the fills' meters read: the node power under the
// meter's domain × meterLoss, split over the domain's meters.
func meterPowerW(nodeW map[string]float64, m *topology.Meter) float64 {
	return nodeW[m.Domain.Key()] * meterLoss / float64(len(m.Domain.Meters))
}

// domainPower sums a report's healthy GPUs' power, and its node power (the
// report's node_power_mw, else the GPUs plus the aggregator's default node
// model, powermodel dgxh100), into every domain above the node.
func domainPower(gpuW, nodeW map[string]float64, r *telemetry.NodeReport) {
	var w float64
	for _, g := range r.Gpus {
		if g.Health == telemetry.Health_HEALTH_OK && g.PowerMw != nil {
			w += float64(*g.PowerMw) / 1000
		}
	}
	nt, _ := powermodel.Lookup("dgxh100")
	n := w + nt.HostW + nt.PerGPUW*float64(len(r.Gpus))
	if r.NodePowerMw != nil {
		n = float64(*r.NodePowerMw) / 1000
	}
	key := r.Site
	gpuW[key] += w
	nodeW[key] += n
	for _, p := range []string{r.Hall, r.Row, r.Rack} {
		key += "/" + p
		gpuW[key] += w
		nodeW[key] += n
	}
}

// publishMeters publishes one window's MeterReport for every meter, as a
// poller does (subject, Msg-Id), from nodeW: fresh, except staleMeterName's.
func publishMeters(t *testing.T, js jetstream.JetStream, topo *topology.Topology, end time.Time, nodeW map[string]float64, seq uint64) {
	t.Helper()
	stale := staleMeterName(topo)
	for _, m := range topo.Meters() {
		r := &telemetry.MeterReport{Meter: m.Name, Level: m.Domain.Level, Path: m.Domain.Path, WindowEndUnixNs: end.UnixNano(), WindowMs: 1000,
			Phase: m.Phase, Feed: m.Feed, Seq: seq, Poller: "grafana-test", ReadUnixNs: end.UnixNano()}
		r.Protocol = telemetry.MeterProtocol_METER_PROTOCOL_SNMP
		if m.Protocol == "modbus" {
			r.Protocol = telemetry.MeterProtocol_METER_PROTOCOL_MODBUS
		}
		if m.Name == stale {
			r.Stale, r.Error, r.ReadUnixNs = true, "snmp get: request timeout", 0
		} else {
			r.PowerW = proto.Float64(meterPowerW(nodeW, m))
			r.EnergyWh = proto.Float64(float64(end.Unix()) * 10)
		}
		subj, err := telemetry.MeterSubject(m.Domain.Path, m.Name)
		if err != nil {
			t.Fatal(err)
		}
		data, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		msg := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{}}
		msg.Header.Set(telemetry.HeaderMsgID, telemetry.MeterReportMsgID(r))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			t.Fatal(err)
		}
	}
}

// syntheticMeters appends the meter points of one synthetic window: a
// switchgear meter per hall and a branch-circuit monitor per row reading
// 1.6 × the GPU power, one rack PDU per rack of r01 with a stale report
// (its poller cannot reach it).
func syntheticMeters(buf *bytes.Buffer, ns int64, seq int, hallW, rowW map[string]float64) {
	for h, w := range hallW {
		fmt.Fprintf(buf, "meter,hall=%s,level=hall,meter=swgr-%s,phase=L1-L3,protocol=modbus,report=fresh,site=dc1 energy_wh=%g,poller=\"p1\",power_w=%g,read_age_ms=0i,seq=%di,stale=false,window_ms=1000i %d\n",
			h, h, float64(ns/1e9)*10, w*1.6, seq, ns)
	}
	for hr, w := range rowW {
		h, r := hr[:len(hr)-4], hr[len(hr)-3:] // "h1/r01"
		fmt.Fprintf(buf, "meter,hall=%s,level=row,meter=bcm-%s-%s,protocol=modbus,report=fresh,row=%s,site=dc1 poller=\"p1\",power_w=%g,read_age_ms=0i,seq=%di,stale=false,window_ms=1000i %d\n",
			h, h, r, r, w*1.6, seq, ns)
		fmt.Fprintf(buf, "meter,feed=a,hall=%s,level=rack,meter=pdu-%s-%s-k01-a,protocol=snmp,rack=k01,report=stale,row=%s,site=dc1 error=\"snmp get: request timeout\",poller=\"p1\",read_age_ms=%di,seq=%di,stale=true,window_ms=1000i %d\n",
			h, h, r, r, 1000*seq, seq, ns)
	}
}
