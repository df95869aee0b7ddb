package ingest

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// refReport encodes r's node and GPU lines with line-protocol/v2's Encoder
// alone: every key and value through AddTag/AddField/EndLine. It is the
// reference the hot path (lpEncoder.report) must match byte for byte.
func refReport(r *telemetry.NodeReport, gpus bool) ([]byte, error) {
	var e lineprotocol.Encoder
	e.SetPrecision(lineprotocol.Nanosecond)
	refAppend(&e, r, gpus)
	return e.Bytes(), e.Err()
}

// refAppend appends r's lines to e (see refReport).
func refAppend(e *lineprotocol.Encoder, r *telemetry.NodeReport, gpus bool) {
	ts := time.Unix(0, r.WindowEndUnixNs)
	loc := func() {
		e.AddTag("hall", r.Hall)
		e.AddTag("node", r.Node)
		e.AddTag("rack", r.Rack)
		e.AddTag("row", r.Row)
		e.AddTag("site", r.Site)
	}
	fl := func(k string, v float64) {
		fv, ok := lineprotocol.FloatValue(v)
		if !ok {
			panic("non-finite")
		}
		e.AddField(k, fv)
	}
	var sumMw uint64
	var healthy, havePower int64
	for _, g := range r.Gpus {
		if g.Health == telemetry.Health_HEALTH_OK {
			healthy++
			if g.PowerMw != nil {
				sumMw += uint64(*g.PowerMw)
				havePower++
			}
		}
	}
	e.StartLine("node")
	loc()
	if r.CpuPowerMw != nil {
		fl("cpu_power_w", telemetry.MilliwattsToW(*r.CpuPowerMw))
	}
	e.AddField("gpus", lineprotocol.IntValue(int64(len(r.Gpus))))
	e.AddField("gpus_healthy", lineprotocol.IntValue(healthy))
	if r.NodeEnergyMj != nil {
		e.AddField("node_energy_mj", lineprotocol.IntValue(int64(*r.NodeEnergyMj)))
	}
	if r.NodePowerMw != nil {
		sv, _ := lineprotocol.StringValue(nodePowerSourceName(r.NodePowerSource))
		e.AddField("node_power_source", sv)
		fl("node_power_w", telemetry.MilliwattsToW(*r.NodePowerMw))
	}
	if len(r.SlotPowerW) > 0 {
		mx := uint32(0)
		for _, p := range r.SlotPowerW {
			mx = max(mx, p)
		}
		fl("power_max_w", float64(mx))
	}
	if havePower > 0 {
		fl("power_w", float64(sumMw)/1000)
	}
	e.EndLine(ts)
	for _, g := range r.Gpus {
		if !gpus {
			break
		}
		e.StartLine("gpu")
		e.AddTag("gpu", strconv.FormatUint(uint64(g.Index), 10)) // no allocation below 100
		loc()
		if g.EnergyMj != nil {
			e.AddField("energy_mj", lineprotocol.IntValue(int64(*g.EnergyMj)))
		}
		if g.Health != telemetry.Health_HEALTH_OK {
			hv, _ := lineprotocol.StringValue(healthName(g.Health))
			e.AddField("health", hv)
		}
		e.AddField("healthy", lineprotocol.BoolValue(g.Health == telemetry.Health_HEALTH_OK))
		if g.MemTempC != nil {
			fl("mem_temp_c", float64(*g.MemTempC))
		}
		if g.PowerLimitMw != nil {
			fl("power_limit_w", telemetry.MilliwattsToW(*g.PowerLimitMw))
		}
		if g.PowerMaxMw != nil {
			fl("power_max_w", telemetry.MilliwattsToW(*g.PowerMaxMw))
		}
		if g.PowerMinMw != nil {
			fl("power_min_w", telemetry.MilliwattsToW(*g.PowerMinMw))
		}
		if g.PowerMw != nil {
			fl("power_w", telemetry.MilliwattsToW(*g.PowerMw))
		}
		if g.SmClockMhz != nil {
			fl("sm_clock_mhz", float64(*g.SmClockMhz))
		}
		if g.TempC != nil {
			fl("temp_c", float64(*g.TempC))
		}
		if g.ThrottleReasons != nil {
			e.AddField("throttle_reasons", lineprotocol.IntValue(int64(*g.ThrottleReasons)))
		}
		if g.UtilPct != nil {
			fl("util_pct", float64(*g.UtilPct))
		}
		e.EndLine(ts)
	}
}

// checkSameAsLibrary fails unless the hot path encodes r exactly as refReport.
func checkSameAsLibrary(t *testing.T, r *telemetry.NodeReport) {
	t.Helper()
	want, werr := refReport(r, true)
	e := newLPEncoder(defaultLevels)
	n, err := e.report(r, true)
	if (err != nil) != (werr != nil) {
		t.Fatalf("hot path error %v, library error %v", err, werr)
	}
	if err != nil {
		if len(e.buf()) != 0 {
			t.Fatalf("failed encode left %q", e.buf())
		}
		return
	}
	if got := e.buf(); !bytes.Equal(got, want) {
		t.Fatalf("hot path and line-protocol/v2 differ:\n got %q\nwant %q", got, want)
	}
	if n != 1+len(r.Gpus) {
		t.Fatalf("%d lines reported for %d gpus", n, len(r.Gpus))
	}
}

func TestFastEncodeMatchesLibrary(t *testing.T) {
	locs := make([]telemetry.Location, 50)
	for i := range locs {
		locs[i] = telemetry.Location{Site: "dc1", Hall: fmt.Sprintf("h%d", i%3), Row: fmt.Sprintf("r%02d", i), Rack: "k,= \\x", Node: fmt.Sprintf("n=%05d", i)}
	}
	fleet := newFleet(t, locs)
	var rep telemetry.NodeReport
	for w := range 20 {
		for i := range locs {
			fleet.Report(&rep, i, time.Unix(1_700_000_000+int64(w), 0), time.Second, 100*time.Millisecond)
			checkSameAsLibrary(t, &rep)
		}
	}
	// Edge values: extremes of every field, negative temperatures, lost GPUs.
	big := []uint32{0, 1, 999, 1000, 1001, 999_999, 1_000_000, 999_999_999, 1_000_000_000, math.MaxUint32}
	for i, v := range big {
		e64 := uint64(v) * 1e9
		th := uint64(math.MaxInt64)
		tc := -int32(v % 300)
		g := &telemetry.Gpu{Index: v % 300, PowerMw: &v, PowerMinMw: &v, PowerMaxMw: &v, PowerLimitMw: &v, SmClockMhz: &v, UtilPct: &v,
			TempC: &tc, MemTempC: &tc, EnergyMj: &e64, ThrottleReasons: &th, Health: telemetry.Health(i % 3)}
		r := &telemetry.NodeReport{Site: "dc1", Hall: "h1", Row: "r1", Rack: "k1", Node: "n1", WindowEndUnixNs: int64(i) - 5,
			SlotPowerW: []uint32{v, 3}, Gpus: []*telemetry.Gpu{g, {Index: 7}}}
		checkSameAsLibrary(t, r)
	}
}

// TestFloatFormatting checks appendMilli and appendIntFloat against
// lineprotocol.Value.AppendBytes over every milliwatt value up to 2 kW,
// the boundaries and random values across the whole range.
func TestFloatFormatting(t *testing.T) {
	lib := func(v float64) string {
		fv, _ := lineprotocol.FloatValue(v)
		return string(fv.AppendBytes(nil))
	}
	milli := func(m uint64) {
		if got, want := string(appendMilli(nil, m)), lib(float64(m)/1000); got != want {
			t.Fatalf("appendMilli(%d) = %s, library %s", m, got, want)
		}
	}
	integer := func(v int64) {
		if got, want := string(appendIntFloat(nil, v)), lib(float64(v)); got != want {
			t.Fatalf("appendIntFloat(%d) = %s, library %s", v, got, want)
		}
	}
	for m := range uint64(2_000_001) {
		milli(m)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		milli(rng.Uint64N(1 << 33))
		integer(rng.Int64N(1<<34) - 1<<33)
	}
	for _, m := range []uint64{999_999_999, 1e9, 1e9 + 1, math.MaxUint32, 1 << 53, math.MaxUint64} {
		milli(m)
	}
	for _, v := range []int64{0, -1, 999_999, -999_999, 1e6, -1e6, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64} {
		integer(v)
	}
}

// TestPlainTag: every value plainTag passes, line-protocol/v2 encodes (in
// strict mode) as the value itself.
func TestPlainTag(t *testing.T) {
	for c := range 256 {
		for _, s := range []string{string(rune(c)), "a" + string([]byte{byte(c)}) + "b", string([]byte{byte(c)})} {
			if !plainTag(s) {
				continue
			}
			var e lineprotocol.Encoder
			e.StartLine("m")
			e.AddTag("k", s)
			e.AddField("f", lineprotocol.IntValue(1))
			if want := "m,k=" + s + " f=1i"; e.Err() != nil || string(e.Bytes()) != want {
				t.Errorf("plainTag(%q) but the library writes %q (err %v)", s, e.Bytes(), e.Err())
			}
		}
	}
	for _, s := range []string{"", "a b", "a,b", "a=b", `a\`, "a\x00", "é"} {
		if plainTag(s) {
			t.Errorf("plainTag(%q) = true", s)
		}
	}
}
