package ingest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/plausible"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func f64(v float64) *float64 { return &v }

// testMeter is a fresh report of rack PDU meter on dc1/h1/r01/k01 (feed a).
func testMeter(meter string, end time.Time, powerW float64, poller string) *telemetry.MeterReport {
	return &telemetry.MeterReport{Meter: meter, Level: "rack", Path: []string{"dc1", "h1", "r01", "k01"},
		WindowEndUnixNs: end.UnixNano(), WindowMs: 1000, PowerW: f64(powerW), EnergyWh: f64(123456),
		Feed: "a", Protocol: telemetry.MeterProtocol_METER_PROTOCOL_SNMP, Seq: 7, ReadUnixNs: end.UnixNano(), Poller: poller, Version: "test"}
}

// staleMeter is the stale report of the same meter and window.
func staleMeter(meter string, end time.Time, lastRead time.Time, poller string) *telemetry.MeterReport {
	r := testMeter(meter, end, 0, poller)
	r.PowerW, r.EnergyWh, r.Stale, r.Error, r.ReadUnixNs = nil, nil, true, "snmp get: request timeout", lastRead.UnixNano()
	return r
}

func meterSubject(t testing.TB, r *telemetry.MeterReport) string {
	t.Helper()
	s, err := telemetry.MeterSubject(r.Path, r.Meter)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkMeterDecodeLikeProto fails unless meterDecoder accepts exactly what
// proto.Unmarshal accepts and yields the same message (unknown fields
// aside); a report that passes the checks encodes to lines InfluxDB's
// parser reads back whole.
func checkMeterDecodeLikeProto(t *testing.T, d *meterDecoder, data []byte) {
	t.Helper()
	var want telemetry.MeterReport
	werr := proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, &want)
	got, err := d.decode(data)
	if (err != nil) != (werr != nil) {
		t.Fatalf("decode error %v, proto.Unmarshal error %v, input %x", err, werr, data)
	}
	if err != nil {
		return
	}
	if !proto.Equal(got, &want) {
		t.Fatalf("decode differs from proto.Unmarshal:\n got %v\nwant %v", got, &want)
	}
	subj, serr := telemetry.MeterSubject(got.Path, got.Meter)
	if serr != nil {
		return // cannot have been published on a valid subject
	}
	path, meter, perr := telemetry.ParseMeterSubject(subj)
	if perr != nil {
		t.Fatalf("subject %q from MeterSubject does not parse: %v", subj, perr)
	}
	b := plausible.Default()
	if checkMeter(path, meter, got, time.Unix(0, got.WindowEndUnixNs), timeWindow{maxAge: time.Hour, skew: time.Minute}, defaultLevels, &b) != nil {
		return // dead-lettered
	}
	e := newLPEncoder(defaultLevels)
	n, err := e.meter(got)
	if err != nil {
		if len(e.buf()) != 0 {
			t.Fatalf("failed encode left %q", e.buf())
		}
		return // dead-lettered: encode
	}
	if c := countParsed(t, e.buf()); c != n {
		t.Fatalf("encoded %d lines, parser read %d: %q", n, c, e.buf())
	}
}

func TestDecodeMeterLikeProto(t *testing.T) {
	d := newMeterDecoder()
	end := time.Unix(1_700_000_000, 0)
	fresh, _ := proto.Marshal(testMeter("pdu-a", end, 7345.5, "p1"))
	stale, _ := proto.Marshal(staleMeter("pdu-a", end, end.Add(-time.Minute), "p2"))
	zero, _ := proto.Marshal(&telemetry.MeterReport{Meter: "z", PowerW: f64(0), EnergyWh: f64(0), Protocol: telemetry.MeterProtocol(9)})
	cases := [][]byte{
		fresh, stale, zero, nil, // present at 0 is not absent; unknown enum values kept
		protowire.AppendVarint(protowire.AppendTag(nil, 6, protowire.VarintType), 5),                // power_w with a wrong wire type: unknown
		protowire.AppendTag(nil, 6, protowire.Fixed64Type),                                          // truncated double
		protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff, 0xfe}), // invalid UTF-8
		protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0xc3}),       // path: invalid UTF-8
		protowire.AppendVarint(protowire.AppendTag(nil, 12, protowire.VarintType), 1<<63),           // enum truncated like proto
		protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 3),               // unknown field
		protowire.AppendFixed32(protowire.AppendTag(nil, 5, protowire.Fixed32Type), 3),              // window_ms with a wrong wire type
		append(append([]byte{}, fresh...), stale...),                                                // concatenation merges: path appends
		{0x00}, // field number 0
	}
	for _, c := range cases {
		checkMeterDecodeLikeProto(t, d, c)
	}
	// A decoded report does not keep the previous one's fields.
	got, err := d.decode(stale)
	if err != nil || got.PowerW != nil || got.EnergyWh != nil || len(got.Path) != 4 {
		t.Errorf("stale after fresh: %v %v", got, err)
	}
}

// FuzzDecodeMeter: meterDecoder agrees with proto.Unmarshal on every
// input, and every report that passes checkMeter encodes to parseable lines.
func FuzzDecodeMeter(f *testing.F) {
	end := time.Unix(1_700_000_000, 0)
	for _, r := range []*telemetry.MeterReport{testMeter("pdu-a", end, 7345.5, "p1"), staleMeter("swgr-h1", end, end.Add(-3*time.Second), "p2"),
		{Meter: "bcm-h1-r01", Level: "row", Path: []string{"dc1", "h1", "r01"}, WindowEndUnixNs: end.UnixNano(), PowerW: f64(1.3e6), Phase: "L1-L3", Protocol: telemetry.MeterProtocol_METER_PROTOCOL_MODBUS}} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0x02, 'd', 'c', 0x31, 0x00})
	d := newMeterDecoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		checkMeterDecodeLikeProto(t, d, data)
	})
}

func TestCheckMeter(t *testing.T) {
	end := time.Now().Truncate(time.Second)
	tw := timeWindow{maxAge: time.Hour, skew: time.Minute}
	b := plausible.Default()
	for _, c := range []struct {
		name, reason string
		mod          func(r *telemetry.MeterReport)
		path         []string
		meter        string
	}{
		{name: "fresh"},
		{name: "stale", mod: func(r *telemetry.MeterReport) { *r = *staleMeter("pdu-a", end, end, "p") }},
		{name: "other meter's subject", reason: ReasonLocation, meter: "pdu-b"},
		{name: "other domain's subject", reason: ReasonLocation, path: []string{"dc1", "h1", "r01", "k02"}},
		{name: "level not the path's", reason: ReasonLocation, mod: func(r *telemetry.MeterReport) { r.Level = "row" }},
		{name: "path deeper than the topology", reason: ReasonLocation, path: []string{"dc1", "h1", "r01", "k01", "x"},
			mod: func(r *telemetry.MeterReport) { r.Path = []string{"dc1", "h1", "r01", "k01", "x"} }},
		{name: "an hour old", reason: ReasonTimestamp, mod: func(r *telemetry.MeterReport) { r.WindowEndUnixNs = end.Add(-2 * time.Hour).UnixNano() }},
		{name: "stale with power", reason: ReasonValue, mod: func(r *telemetry.MeterReport) { r.Stale = true }},
		{name: "negative power", reason: ReasonValue, mod: func(r *telemetry.MeterReport) { r.PowerW = f64(-1) }},
		{name: "NaN power", reason: ReasonValue, mod: func(r *telemetry.MeterReport) { r.PowerW = f64(math.NaN()) }},
		{name: "Inf energy", reason: ReasonValue, mod: func(r *telemetry.MeterReport) { r.EnergyWh = f64(math.Inf(1)) }},
		{name: "seq beyond int64", reason: ReasonValue, mod: func(r *telemetry.MeterReport) { r.Seq = 1 << 63 }},
		{name: "3 GW (a wrong scale)", reason: ReasonImplausible, mod: func(r *telemetry.MeterReport) { r.PowerW = f64(3e9) }},
		{name: "2 GW exactly", mod: func(r *telemetry.MeterReport) { r.PowerW = f64(2e9) }},
		{name: "energy beyond 2^53", reason: ReasonImplausible, mod: func(r *telemetry.MeterReport) { r.EnergyWh = f64(1 << 54) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := testMeter("pdu-a", end, 7000, "p")
			if c.mod != nil {
				c.mod(r)
			}
			path, meter := c.path, c.meter
			if path == nil {
				path = []string{"dc1", "h1", "r01", "k01"}
			}
			if meter == "" {
				meter = "pdu-a"
			}
			err := checkMeter(path, meter, r, end, tw, defaultLevels, &b)
			reason, _ := asPoison(err)
			if reason != c.reason {
				t.Errorf("checkMeter = %v (reason %q), want reason %q", err, reason, c.reason)
			}
		})
	}
}

// TestEncodeMeter: the exact lines of a fresh and a stale report, and a
// hall meter (no rack/row tags, phase, no feed).
func TestEncodeMeter(t *testing.T) {
	end := time.Unix(1_700_000_000, 0)
	e := newLPEncoder(defaultLevels)
	if _, err := e.meter(testMeter("pdu-a", end, 7345.5, "p1")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.meter(staleMeter("pdu-a", end, end.Add(-90*time.Second), "p2")); err != nil {
		t.Fatal(err)
	}
	h := &telemetry.MeterReport{Meter: "swgr-h1", Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: end.UnixNano(), WindowMs: 1000,
		PowerW: f64(180500), Phase: "L1-L3", Protocol: telemetry.MeterProtocol_METER_PROTOCOL_MODBUS, Seq: 1}
	if _, err := e.meter(h); err != nil {
		t.Fatal(err)
	}
	want := "meter,feed=a,hall=h1,level=rack,meter=pdu-a,protocol=snmp,rack=k01,report=fresh,row=r01,site=dc1 energy_wh=123456,poller=\"p1\",power_w=7345.5,read_age_ms=0i,seq=7i,stale=false,window_ms=1000i 1700000000000000000\n" +
		"meter,feed=a,hall=h1,level=rack,meter=pdu-a,protocol=snmp,rack=k01,report=stale,row=r01,site=dc1 error=\"snmp get: request timeout\",poller=\"p2\",read_age_ms=90000i,seq=7i,stale=true,window_ms=1000i 1700000000000000000\n" +
		"meter,hall=h1,level=hall,meter=swgr-h1,phase=L1-L3,protocol=modbus,report=fresh,site=dc1 power_w=180500,seq=1i,stale=false,window_ms=1000i 1700000000000000000\n"
	if got := string(e.buf()); got != want {
		t.Errorf("lines:\n%s\nwant:\n%s", got, want)
	}
	if _, err := meterTags([]string{"site", "hall", "feed", "row", "rack"}); err == nil || !strings.Contains(err.Error(), `"feed"`) {
		t.Errorf("a level named feed: %v", err)
	}
}

// BenchmarkMeter is ingest's CPU per meter report: decode, check and
// encode. decoder=megawatch is the protowire decoder; the baseline,
// decoder=proto.Unmarshal, differs only in the decoder.
func BenchmarkMeter(b *testing.B) {
	end := time.Now().Truncate(time.Second)
	var msgs [][]byte
	for i := range 64 {
		r := testMeter(fmt.Sprintf("pdu-%02d", i), end.Add(-time.Duration(i)*time.Second), 7000+float64(i), "poller-a")
		if i%8 == 7 {
			r = staleMeter(r.Meter, end.Add(-time.Duration(i)*time.Second), end.Add(-time.Minute), "poller-a")
		}
		data, _ := proto.Marshal(r)
		msgs = append(msgs, data)
	}
	path := []string{"dc1", "h1", "r01", "k01"}
	tw := timeWindow{maxAge: time.Hour, skew: time.Minute}
	bounds := plausible.Default()
	run := func(b *testing.B, decode func([]byte) (*telemetry.MeterReport, error)) {
		e := newLPEncoder(defaultLevels)
		e.reset(make([]byte, 0, 1<<20))
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			r, err := decode(msgs[i%len(msgs)])
			if err != nil {
				b.Fatal(err)
			}
			if err := checkMeter(path, r.Meter, r, end, tw, defaultLevels, &bounds); err != nil {
				b.Fatal(err)
			}
			if len(e.buf()) > 1<<19 {
				e.reset(e.buf())
			}
			if _, err := e.meter(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("decoder=megawatch", func(b *testing.B) { run(b, newMeterDecoder().decode) })
	b.Run("decoder=proto.Unmarshal", func(b *testing.B) {
		var r telemetry.MeterReport
		run(b, func(data []byte) (*telemetry.MeterReport, error) { r.Reset(); return &r, proto.Unmarshal(data, &r) })
	})
}

// TestMetersEnsureStreamFalse: with meters.ensure_stream false ingest
// does not create MEGAWATCH_METER; it writes node reports meanwhile, and
// once `megawatch meters` creates the stream, its reports; the consumer's
// default name is <consumer>_meter.
func TestMetersEnsureStreamFalse(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	cfg := testConfig(influx.URL, "mw")
	cfg.Meters.EnsureStream = false
	startIngest(t, cfg, srv.URL(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// ingest set up the other streams, not this one.
	waitFor(t, 30*time.Second, "the power stream", func() bool { _, err := js.Stream(ctx, telemetry.StreamPower); return err == nil })
	// Node reports are written meanwhile: the missing stream holds up nothing else.
	publishReport(t, js, testReport(testLoc(1), 1, time.Now().Truncate(time.Second).Add(-time.Minute), 8))
	waitFor(t, 30*time.Second, "the node point", func() bool { return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) == 1 })
	if _, err := js.Stream(ctx, telemetry.StreamMeter); err == nil {
		t.Fatal("ingest created MEGAWATCH_METER although meters.ensure_stream is false")
	}
	if _, err := natsx.EnsureStream(ctx, js, natsx.DefaultStreamsConfig().MeterStream()); err != nil {
		t.Fatal(err)
	}
	r := testMeter("pdu-a", time.Now().Truncate(time.Second).Add(-time.Minute), 4321, "p")
	publishRaw(t, js, meterSubject(t, r), r, telemetry.MeterReportMsgID(r))
	waitFor(t, 60*time.Second, "the meter point", func() bool {
		return influx.Count(t, "mw", `SELECT count(power_w) FROM meter WHERE power_w = 4321`) == 1
	})
	if _, err := js.Consumer(ctx, telemetry.StreamMeter, "megawatch_ingest_meter"); err != nil {
		t.Errorf("consumer megawatch_ingest_meter: %v", err)
	}
}
