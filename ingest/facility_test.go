package ingest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// facilityRollup is a hall rollup from an aggregator that computes
// facility power: metered, with every optional facility field.
func facilityRollup(end time.Time) *telemetry.Rollup {
	return &telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: end.UnixNano(),
		PowerW: 10e6, PowerEstW: 10.5e6, PowerMaxW: 11e6, CapacityW: 25e6, NodesReporting: 9, NodesExpected: 10,
		NodePowerW: 16e6, NodePowerEstW: 17.5e6, NodePowerModeledW: 2e6, NodesPowerMeasured: 8,
		MeteredW: f64(18.25e6), Meters: 3, MetersStale: 1, FacilitySource: telemetry.FacilitySource_FACILITY_SOURCE_METER,
		FacilityPowerW: 18.25e6, FacilityPowerMaxW: 19e6, UnaccountedW: f64(2.25e6),
		FacilityRampWPerS: f64(-0.5e6), FacilitySwingW: f64(1.5e6), FacilityOscFreqHz: f64(0.25), FacilityOscW: f64(0.75e6),
		FacilityContinuityDeltaW: f64(-1e5), FacilityDegraded: true, CpuPowerW: f64(1.25e6)}
}

// TestEncodeRollupFacility: the facility fields in MW, facility_source a
// string, headroom on the facility figure; an older aggregator's rollup
// (facility_source unspecified) has none of them and headroom on the GPU
// estimate; a node-sourced one has no metered or unaccounted power.
func TestEncodeRollupFacility(t *testing.T) {
	end := time.Unix(1_700_000_000, 0)
	e := newLPEncoder(defaultLevels)
	ro := facilityRollup(end)
	if _, err := e.rollup("hall", ro.Path, ro); err != nil {
		t.Fatal(err)
	}
	old := &telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: end.UnixNano(), PowerW: 10e6, PowerEstW: 10.5e6, CapacityW: 25e6}
	if _, err := e.rollup("hall", old.Path, old); err != nil {
		t.Fatal(err)
	}
	node := &telemetry.Rollup{Level: "hall", Path: []string{"dc1", "h1"}, WindowEndUnixNs: end.UnixNano(), PowerW: 10e6, PowerEstW: 10.5e6, CapacityW: 25e6,
		NodePowerW: 16e6, NodePowerEstW: 17e6, FacilitySource: telemetry.FacilitySource_FACILITY_SOURCE_NODE, FacilityPowerW: 17e6, FacilityPowerMaxW: 18e6}
	if _, err := e.rollup("hall", node.Path, node); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(e.buf())), "\n")
	want := []string{
		"rollup,hall=h1,level=hall,site=dc1 capacity_mw=25,coverage=0.9,cpu_power_mw=1.25,degraded=false,facility_continuity_delta_mw=-0.1,facility_degraded=true,facility_max_mw=19,facility_mw=18.25,facility_osc_freq_hz=0.25,facility_osc_mw=0.75,facility_ramp_mw_per_s=-0.5,facility_source=\"meter\",facility_swing_mw=1.5,gpus=0i,gpus_healthy=0i,headroom_mw=6.75,lag_ms=0i,metered_mw=18.25,meters=3i,meters_stale=1i,node_power_est_mw=17.5,node_power_modeled_mw=2,node_power_mw=16,nodes_expected=10i,nodes_power_measured=8i,nodes_reporting=9i,power_est_mw=10.5,power_max_mw=11,power_mw=10,stale_nodes=0i,throttled_gpus=0i,unaccounted_mw=2.25 1700000000000000000",
		"rollup,hall=h1,level=hall,site=dc1 capacity_mw=25,degraded=false,gpus=0i,gpus_healthy=0i,headroom_mw=14.5,lag_ms=0i,nodes_expected=0i,nodes_reporting=0i,power_est_mw=10.5,power_max_mw=0,power_mw=10,stale_nodes=0i,throttled_gpus=0i 1700000000000000000",
		"rollup,hall=h1,level=hall,site=dc1 capacity_mw=25,degraded=false,facility_degraded=false,facility_max_mw=18,facility_mw=17,facility_source=\"node\",gpus=0i,gpus_healthy=0i,headroom_mw=8,lag_ms=0i,meters=0i,meters_stale=0i,node_power_est_mw=17,node_power_modeled_mw=0,node_power_mw=16,nodes_expected=0i,nodes_power_measured=0i,nodes_reporting=0i,power_est_mw=10.5,power_max_mw=0,power_mw=10,stale_nodes=0i,throttled_gpus=0i 1700000000000000000",
	}
	for i := range max(len(lines), len(want)) {
		var g, w string
		if i < len(lines) {
			g = lines[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("line %d:\n got %s\nwant %s", i, g, w)
		}
	}
	// checkRollup: the facility figures are checked like the GPU ones.
	tw := timeWindow{maxAge: time.Hour, skew: time.Minute}
	for name, mod := range map[string]func(r *telemetry.Rollup){
		"negative metered": func(r *telemetry.Rollup) { r.MeteredW = f64(-1) },
		"NaN facility":     func(r *telemetry.Rollup) { r.FacilityPowerW = nan() },
		"Inf unaccounted":  func(r *telemetry.Rollup) { r.UnaccountedW = f64(inf()) },
		"NaN node power":   func(r *telemetry.Rollup) { r.NodePowerW = nan() },
	} {
		r := facilityRollup(end)
		mod(r)
		if reason, _ := asPoison(checkRollup("hall", r.Path, r, end, tw, 4)); reason != ReasonValue {
			t.Errorf("%s: reason %q, want value", name, reason)
		}
	}
	if err := checkRollup("hall", ro.Path, facilityRollup(end), end, tw, 4); err != nil {
		t.Errorf("negative unaccounted and ramp are fine: %v", err)
	}
}

func nan() float64 { var z float64; return z / z }
func inf() float64 { var z float64; return 1 / z }

// TestFacilityRollupsStored: rollups with and without facility fields →
// InfluxDB holds exactly the fields each had; absent stays absent (an
// older aggregator's rollup has no node_power_mw, facility_mw, ... at all,
// never 0).
func TestFacilityRollupsStored(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	natsURL, js := natsInProcess(t)
	startIngest(t, testConfig(influx.URL, "mw"), natsURL, nil)
	end := time.Now().Truncate(time.Second).Add(-time.Minute)
	metered := facilityRollup(end)
	old := &telemetry.Rollup{Level: "row", Path: []string{"dc1", "h1", "r01"}, WindowEndUnixNs: end.UnixNano(), PowerW: 1e6, PowerEstW: 1e6, CapacityW: 2e6, NodesReporting: 1, NodesExpected: 1}
	node := &telemetry.Rollup{Level: "row", Path: []string{"dc1", "h1", "r02"}, WindowEndUnixNs: end.UnixNano(), PowerW: 1e6, PowerEstW: 1e6, CapacityW: 2e6, NodesReporting: 1, NodesExpected: 1,
		NodePowerW: 1.5e6, NodePowerEstW: 1.5e6, NodePowerModeledW: 1.5e6, FacilitySource: telemetry.FacilitySource_FACILITY_SOURCE_NODE, FacilityPowerW: 1.5e6, FacilityPowerMaxW: 1.6e6,
		Meters: 1, MetersStale: 1, FacilityDegraded: true}
	for _, r := range []*telemetry.Rollup{metered, old, node} {
		subj, _ := telemetry.RollupSubject(r.Level, r.Path)
		publishRaw(t, js, subj, r, "")
	}
	waitFor(t, 30*time.Second, "3 rollups", func() bool {
		return influx.Count(t, "mw", `SELECT count(power_mw) FROM rollup`) == 3
	})
	fields := func(where string) string {
		s := influx.Query(t, "mw", `SELECT * FROM rollup WHERE `+where)
		if len(s) != 1 || len(s[0].Values) != 1 {
			t.Fatalf("%s: %+v", where, s)
		}
		var out []string
		for i, c := range s[0].Columns {
			if v := s[0].Values[0][i]; v != nil && c != "time" && c != "site" && c != "hall" && c != "row" && c != "rack" && c != "level" {
				out = append(out, fmt.Sprintf("%s=%v", c, v))
			}
		}
		sort.Strings(out)
		return strings.Join(out, " ")
	}
	for _, c := range []struct{ where, want string }{
		{`level='hall'`, "capacity_mw=25 coverage=0.9 cpu_power_mw=1.25 degraded=false facility_continuity_delta_mw=-0.1 facility_degraded=true facility_max_mw=19 facility_mw=18.25 facility_osc_freq_hz=0.25 facility_osc_mw=0.75 facility_ramp_mw_per_s=-0.5 facility_source=meter facility_swing_mw=1.5 gpus=0 gpus_healthy=0 headroom_mw=6.75 lag_ms=0 metered_mw=18.25 meters=3 meters_stale=1 node_power_est_mw=17.5 node_power_modeled_mw=2 node_power_mw=16 nodes_expected=10 nodes_power_measured=8 nodes_reporting=9 power_est_mw=10.5 power_max_mw=11 power_mw=10 stale_nodes=0 throttled_gpus=0 unaccounted_mw=2.25"},
		{`row='r01'`, "capacity_mw=2 coverage=1 degraded=false gpus=0 gpus_healthy=0 headroom_mw=1 lag_ms=0 nodes_expected=1 nodes_reporting=1 power_est_mw=1 power_max_mw=0 power_mw=1 stale_nodes=0 throttled_gpus=0"},
		{`row='r02'`, "capacity_mw=2 coverage=1 degraded=false facility_degraded=true facility_max_mw=1.6 facility_mw=1.5 facility_source=node gpus=0 gpus_healthy=0 headroom_mw=0.5 lag_ms=0 meters=1 meters_stale=1 node_power_est_mw=1.5 node_power_modeled_mw=1.5 node_power_mw=1.5 nodes_expected=1 nodes_power_measured=0 nodes_reporting=1 power_est_mw=1 power_max_mw=0 power_mw=1 stale_nodes=0 throttled_gpus=0"},
	} {
		if got := fields(c.where); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.where, got, c.want)
		}
	}
	// A stale meter is never 0 W: the node-sourced row has no metered_mw.
	if n := influx.Count(t, "mw", `SELECT count(metered_mw) FROM rollup`); n != 1 {
		t.Errorf("metered_mw points %d, want 1 (the metered hall only)", n)
	}
}

// deadLetterCount is ingest's megawatch_ingest_deadletter_total{reason}.
func deadLetterCount(t *testing.T, in *Ingester, reason string) int {
	t.Helper()
	var m dto.Metric
	if err := in.m.deadLetter.WithLabelValues(reason).Write(&m); err != nil {
		t.Fatal(err)
	}
	return int(m.GetCounter().GetValue())
}

// TestMetersInflux: meter reports through JetStream and ingest into the
// real influxd, counted back. Fresh reports of 3 meters × 4 windows; an HA
// peer's duplicate fresh report (same Msg-Id: JetStream stores one); a
// stale report arriving after the fresh one of its window, and one before;
// a window only a stale report has (from both pollers: one stored);
// malformed ones dead-lettered with their reason. Both arrival orders
// leave power_w, poller and stale=false of the fresh report intact in its
// series and the stale report in its own (report=stale).
func TestMetersInflux(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	natsURL, js := natsInProcess(t)
	ensureStreams(t, js)
	in, _, _ := startIngest(t, testConfig(influx.URL, "mw"), natsURL, nil)
	end := time.Now().Truncate(time.Second).Add(-2 * time.Minute)
	win := func(i int) time.Time { return end.Add(time.Duration(i) * time.Second) }
	pub := func(r *telemetry.MeterReport) {
		t.Helper()
		publishRaw(t, js, meterSubject(t, r), r, telemetry.MeterReportMsgID(r))
	}
	meters := []string{"pdu-a", "pdu-b", "pdu-c"}
	power := func(m, w int) float64 { return 5000 + 100*float64(m) + float64(w) + 0.25 }
	count := func(q string) int64 { return influx.Count(t, "mw", q) }
	// Windows 0-3 fresh for every meter, except pdu-b window 2 (the
	// stale-first case below) and pdu-c window 3 (stale only).
	fresh := 0
	for w := range 4 {
		for m, name := range meters {
			if (m == 1 && w == 2) || (m == 2 && w == 3) {
				continue
			}
			pub(testMeter(name, win(w), power(m, w), "poller-a"))
			fresh++
		}
	}
	// The HA peer read pdu-a window 1 a moment later: same Msg-Id, dropped by JetStream.
	pub(testMeter("pdu-a", win(1), 9999, "poller-b"))
	waitFor(t, 30*time.Second, "fresh meter points", func() bool {
		return count(`SELECT count(power_w) FROM meter`) == int64(fresh)
	})
	// Order 1: fresh stored, then the peer's stale report of the same window.
	pub(staleMeter("pdu-a", win(1), win(0), "poller-b"))
	waitFor(t, 30*time.Second, "the stale report after the fresh one", func() bool {
		return count(`SELECT count(stale) FROM meter WHERE report='stale'`) == 1
	})
	// Order 2: the stale report stored first, then the peer's fresh one.
	pub(staleMeter("pdu-b", win(2), win(1), "poller-b"))
	waitFor(t, 30*time.Second, "the stale report before the fresh one", func() bool {
		return count(`SELECT count(stale) FROM meter WHERE report='stale'`) == 2
	})
	pub(testMeter("pdu-b", win(2), power(1, 2), "poller-a"))
	fresh++
	// Stale only: both pollers failed (one stored: same :stale Msg-Id).
	pub(staleMeter("pdu-c", win(3), win(2), "poller-a"))
	pub(staleMeter("pdu-c", win(3), win(2), "poller-b"))
	// Malformed.
	good := testMeter("pdu-a", win(5), 1, "poller-a")
	goodData, _ := protoMarshal(good)
	subj := meterSubject(t, good)
	publishBytes(t, js, subj, []byte{0xff, 0x01, 0x02}, "")                               // decode
	publishBytes(t, js, subj, nil, "")                                                    // decode: empty
	publishBytes(t, js, "megawatch.v1.meter.pdu-a", goodData, "")                         // subject: no domain
	publishBytes(t, js, "megawatch.v1.meter.dc1.h1.r01.k02.pdu-a", goodData, "")          // location: another rack
	publishBytes(t, js, subj, goodData, telemetry.MeterMsgID("pdu-a", win(6).UnixNano())) // forged_id: another window's id
	big := testMeter("pdu-a", win(7), 3e9, "poller-a")                                    // implausible: 3 GW
	pub(big)
	neg := testMeter("pdu-a", win(8), -5, "poller-a") // value
	pub(neg)
	lie := staleMeter("pdu-a", win(9), win(0), "poller-a") // value: stale with power
	lie.PowerW = f64(0)
	publishRaw(t, js, subj, lie, "")
	waitFor(t, 30*time.Second, "every meter message handled", func() bool {
		return count(`SELECT count(power_w) FROM meter`) == int64(fresh) && count(`SELECT count(stale) FROM meter WHERE report='stale'`) == 3 &&
			len(deadLetters(t, js)) == 8
	})
	wantDL := []string{
		"decode " + subj, "decode " + subj, "forged_id " + subj, "implausible " + subj,
		"location megawatch.v1.meter.dc1.h1.r01.k02.pdu-a", "subject megawatch.v1.meter.pdu-a", "value " + subj, "value " + subj,
	}
	if got := deadLetters(t, js); fmt.Sprint(got) != fmt.Sprint(wantDL) {
		t.Errorf("dead letters:\n got %q\nwant %q", got, wantDL)
	}
	for reason, n := range map[string]int{ReasonDecode: 2, ReasonSubject: 1, ReasonLocation: 1, ReasonForgedID: 1, ReasonImplausible: 1, ReasonValue: 2} {
		if got := deadLetterCount(t, in, reason); got != n {
			t.Errorf("megawatch_ingest_deadletter_total{reason=%q} = %d, want %d", reason, got, n)
		}
	}
	// Exactly: one fresh point per meter and window that had a fresh report, with its power.
	row := func(q string) string {
		s := influx.Query(t, "mw", q)
		if len(s) != 1 || len(s[0].Values) != 1 {
			return fmt.Sprintf("%+v", s)
		}
		return fmt.Sprint(s[0].Values[0][1:])
	}
	for _, c := range []struct {
		m, w int
		name string
	}{{0, 1, "fresh then stale"}, {1, 2, "stale then fresh"}, {2, 0, "fresh only"}} {
		q := fmt.Sprintf(`SELECT power_w, stale, poller, energy_wh, read_age_ms FROM meter WHERE meter='%s' AND report='fresh' AND time = %d`, meters[c.m], win(c.w).UnixNano())
		if got, want := row(q), fmt.Sprintf("[%v false poller-a 123456 0]", power(c.m, c.w)); got != want {
			t.Errorf("%s: fresh point %s, want %s", c.name, got, want)
		}
		// Read without the tag (as a dashboard does): the window was read.
		q = fmt.Sprintf(`SELECT count(power_w) FROM meter WHERE meter='%s' AND time = %d`, meters[c.m], win(c.w).UnixNano())
		if n := count(q); n != 1 {
			t.Errorf("%s: %d power readings, want 1", c.name, n)
		}
	}
	for _, c := range []struct {
		m, w   int
		poller string
		ageMs  int
	}{{0, 1, "poller-b", 1000}, {1, 2, "poller-b", 1000}, {2, 3, "poller-a", 1000}} {
		q := fmt.Sprintf(`SELECT stale, power_w, poller, error, read_age_ms FROM meter WHERE meter='%s' AND report='stale' AND time = %d`, meters[c.m], win(c.w).UnixNano())
		if got, want := row(q), fmt.Sprintf("[true <nil> %s snmp get: request timeout %d]", c.poller, c.ageMs); got != want {
			t.Errorf("stale %s window %d: %s, want %s", meters[c.m], c.w, got, want)
		}
	}
	// The stale-only window: no power reading at all (never 0 W).
	if n := count(fmt.Sprintf(`SELECT count(power_w) FROM meter WHERE meter='pdu-c' AND time = %d`, win(3).UnixNano())); n != 0 {
		t.Errorf("pdu-c window 3: %d power readings, want none", n)
	}
	// Tags as the rollups have them.
	s := influx.Query(t, "mw", `SHOW TAG KEYS FROM meter`)
	var keys []string
	for _, v := range s[0].Values {
		keys = append(keys, fmt.Sprint(v[0]))
	}
	if got := strings.Join(keys, ","); got != "feed,hall,level,meter,protocol,rack,report,row,site" {
		t.Errorf("tag keys %s", got)
	}
}

// BenchmarkEncodeRollup: a rollup's line with the facility fields
// (facility=yes) against one from an older aggregator (the baseline).
func BenchmarkEncodeRollup(b *testing.B) {
	end := time.Unix(1_700_000_000, 0)
	full := facilityRollup(end)
	old := facilityRollup(end)
	old.FacilitySource, old.MeteredW, old.UnaccountedW, old.CpuPowerW = telemetry.FacilitySource_FACILITY_SOURCE_UNSPECIFIED, nil, nil, nil
	old.FacilityRampWPerS, old.FacilitySwingW, old.FacilityOscFreqHz, old.FacilityOscW, old.FacilityContinuityDeltaW = nil, nil, nil, nil, nil
	for _, c := range []struct {
		name string
		r    *telemetry.Rollup
	}{{"facility=no", old}, {"facility=yes", full}} {
		b.Run(c.name, func(b *testing.B) {
			e := newLPEncoder(defaultLevels)
			e.reset(make([]byte, 0, 1<<20))
			b.ReportAllocs()
			for b.Loop() {
				if len(e.buf()) > 1<<19 {
					e.reset(e.buf())
				}
				if _, err := e.rollup("hall", c.r.Path, c.r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
