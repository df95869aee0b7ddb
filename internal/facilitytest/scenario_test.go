package facilitytest

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// Metrics of the shipped facility rules the scenario runs: the meter/node
// divergence rule and the stale meters rule.
const (
	divergenceMetric  = "unaccounted_ratio"
	staleMetersMetric = "stale_meters"
)

// shippedRules are configs/alerts.yaml's rules on metric, as shipped,
// except that a `for` or keep_firing_for longer than 2 s is cut to 2 s so
// that the scenario stays short (the state machine's timing is the rules
// package's tests' business).
func shippedRules(t testing.TB, metric string) []rules.Rule {
	t.Helper()
	cfg, err := alerts.LoadConfig(filepath.Join("..", "..", "configs", "alerts.yaml"))
	if err != nil {
		t.Fatalf("configs/alerts.yaml: %v", err)
	}
	var out []rules.Rule
	for _, r := range cfg.Rules {
		if r.Metric != metric {
			continue
		}
		if r.Threshold == nil || r.Below() {
			t.Fatalf("rule %s: the scenario expects a threshold above which %s fires", r.Name, metric)
		}
		if r.For > 2*time.Second {
			t.Logf("rule %s: for %s cut to 2s for the test", r.Name, r.For)
			r.For = 2 * time.Second
		}
		if r.KeepFiringFor > 2*time.Second {
			t.Logf("rule %s: keep_firing_for %s cut to 2s for the test", r.Name, r.KeepFiringFor)
			r.KeepFiringFor = 2 * time.Second
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		t.Fatalf("configs/alerts.yaml ships no rule on metric %s (issue 12: a rule for meter/node divergence and for stale meters)", metric)
	}
	return out
}

// clearOf is where a firing rule resolves (its clear, else its threshold).
func clearOf(r rules.Rule) float64 {
	if r.Clear != nil {
		return *r.Clear
	}
	return *r.Threshold
}

// selected are the domains a rule evaluates.
func selected(topo *topology.Topology, r rules.Rule) []*topology.Domain {
	var out []*topology.Domain
	for _, d := range topo.Domains() {
		if r.Level != "" && d.Level != r.Level {
			continue
		}
		if len(r.Domains) > 0 && !slices.ContainsFunc(r.Domains, func(g string) bool { ok, _ := path.Match(g, d.Key()); return ok }) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// baselineMeters are meter values a little above what each domain's nodes
// draw — the non-IT load and losses of a real feed, a fraction f of the
// meter's figure — rounded up to what each meter can carry. A meter over
// metered children reads their meters' sum plus its own fraction.
func (h *hall) baselineMeters(t testing.TB, f float64) map[string]int64 {
	all := h.expect(state{})
	out := map[string]int64{}
	metered := map[*topology.Domain]int64{}
	ds := h.topo.Domains()
	for i := len(ds) - 1; i >= 0; i-- { // children before parents
		d := ds[i]
		base := all[d.Key()].nodeW
		if len(d.Children) > 0 {
			var sum int64
			ok := true
			for _, c := range d.Children {
				v, has := metered[c]
				ok = ok && has
				sum += v
			}
			if ok {
				base = sum
			}
		}
		if len(d.Meters) == 0 {
			continue
		}
		var sum int64
		for _, m := range d.Meters {
			v := roundUp(float64(base)/(1-f)/float64(len(d.Meters)), meterStep(t, m))
			out[m.Name] = v
			sum += v
		}
		metered[d] = sum
	}
	return out
}

func (h *hall) serveAll(t testing.TB, s state) {
	for name, w := range s.meterW {
		if !s.silent[name] {
			h.serveMeter(t, name, w)
		}
	}
}

// waitFigures waits for a window after since whose rollups carry, for
// every domain, exactly the figures of s.
func (h *hall) waitFigures(t *testing.T, since time.Time, what string, s state) int64 {
	t.Helper()
	want := h.expect(s)
	keys := h.keys()
	minCov := h.cfg.ResolveMinCoverage
	checked := map[int64]bool{}
	var last error
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		ends, rows := h.rollups.windowsSince(since, keys)
		for _, end := range ends {
			if checked[end] {
				continue
			}
			checked[end] = true
			var errs []string
			for _, k := range keys {
				if err := check(k, rows[end][k], want[k], minCov); err != nil {
					errs = append(errs, err.Error())
				}
			}
			if len(errs) == 0 {
				return end
			}
			last = fmt.Errorf("window ending %s:\n  %s", time.Unix(0, end).UTC().Format("15:04:05.000"), strings.Join(errs, "\n  "))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: no window after %s with every domain's figures right within %s; the newest checked: %v",
		what, since.UTC().Format("15:04:05.000"), waitFor, last)
	return 0
}

// waitCollectors waits until every real collector's newest report carries
// its node-power source and exactly the node and GPU power served.
func (h *hall) waitCollectors(t *testing.T) {
	t.Helper()
	src := map[string]telemetry.NodePowerSource{
		kindRedfish: telemetry.NodePowerSource_NODE_POWER_REDFISH,
		kindHwmon:   telemetry.NodePowerSource_NODE_POWER_HWMON,
		kindModel:   telemetry.NodePowerSource_NODE_POWER_MODEL,
	}
	deadline := time.Now().Add(waitFor)
	for _, n := range h.nodes {
		if !n.real() {
			continue
		}
		for {
			r := h.nodeRx.get(n.name)
			var problem string
			switch {
			case r == nil:
				problem = "no report"
			case r.NodePowerSource != src[n.kind] || r.NodePowerMw == nil || int64(r.GetNodePowerMw()) != n.nodeW*1000:
				problem = fmt.Sprintf("node power %v mW from %v, want %d mW from %v", r.NodePowerMw, r.NodePowerSource, n.nodeW*1000, src[n.kind])
			case len(r.Gpus) != n.gpus:
				problem = fmt.Sprintf("%d GPUs, want %d", len(r.Gpus), n.gpus)
			default:
				for _, g := range r.Gpus {
					if int64(g.GetPowerMw()) != n.gpuW*1000 {
						problem = fmt.Sprintf("GPU %d at %d mW, want %d", g.Index, g.GetPowerMw(), n.gpuW*1000)
					}
				}
			}
			if problem == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("collector %s (%s): %s", n.name, n.kind, problem)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func fmtNs(ns int64) string { return time.Unix(0, ns).UTC().Format("15:04:05.000") }

// waitStaleAlert waits until stale rule r is active at Alertmanager for
// exactly the domains it selects whose meters_stale passes its threshold
// in state s.
func (h *hall) waitStaleAlert(t *testing.T, r rules.Rule, s state) {
	t.Helper()
	w := h.expect(s)
	var doms []string
	for _, d := range selected(h.topo, r) {
		if float64(w[d.Key()].metersStale) > *r.Threshold {
			doms = append(doms, d.Key())
		}
	}
	if len(doms) == 0 {
		t.Fatalf("rule %s (level %q, threshold %v): no domain passes it with %v silent: the scenario cannot show it", r.Name, r.Level, *r.Threshold, s.silent)
	}
	waitAM(t, h.am.URL, r.Name, doms, fmt.Sprintf("meters %v silent", s.silent))
}

// setNodePower makes a real collector's node-power source serve w watts
// (the BMC's chassis power, or the power meter's power1_average in µW).
func (h *hall) setNodePower(t *testing.T, node string, w int64) {
	t.Helper()
	n := h.nodes[node]
	switch n.kind {
	case kindRedfish:
		h.bmc.SetPowerW(float64(w))
	case kindHwmon:
		p := filepath.Join(h.sysfs, "class", "hwmon", "hwmon1", "power1_average")
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d\n", w*1_000_000)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("node %s (%s): no node-power source to set", node, n.kind)
	}
	n.nodeW = w
	h.nodes[node] = n
}

// crossCheckSNMP reads every PDU's power object with Debian's snmpget (v2c
// or v3 as the meter is defined): the agent serves the raw value of s.
func (h *hall) crossCheckSNMP(t *testing.T, s state) {
	t.Helper()
	for _, m := range h.topo.Meters() {
		if m.SNMP == nil {
			continue
		}
		args := h.snmp.V2Args(m.SNMP.Power.OID)
		if m.SNMP.Version == "3" {
			args = h.snmp.V3Args(m.SNMP.Power.OID)
		}
		got, err := h.snmp.SNMPGet(args...)
		if err != nil {
			t.Fatalf("snmpget %s: %v", m.Name, err)
		}
		if want := fmt.Sprint(s.meterW[m.Name] / int64(m.SNMP.Power.Scale)); got != want {
			t.Fatalf("snmpget %s %s: %q, want %q", m.Name, m.SNMP.Power.OID, got, want)
		}
	}
}

// With the meters poller down (meters configured, never read), every meter
// is stale: the rollups carry exactly the nodes' GPU and node power, count
// every meter stale, and take the facility figure from the node sum,
// degraded — never 0 W.
func TestHallMetersPollerDown(t *testing.T) {
	t.Parallel()
	h := startHall(t, hallOptions{noMeters: true})
	h.waitCollectors(t)
	s := state{meterW: map[string]int64{}, silent: map[string]bool{}, down: map[string]bool{}}
	for _, m := range h.topo.Meters() {
		s.silent[m.Name] = true
	}
	h.waitFigures(t, time.Now(), "every meter stale", s)
}

// The scenario of issue 12, end to end through the real components:
//
//   - figures: every domain's rollup carries exactly the GPU power, the
//     node power (Redfish, hwmon, the collector's model, measured and
//     aggregator-modeled nodes) and the metered power that the servers and
//     nodes served; facility_power_w is the meter's figure (source METER);
//     a new meter value is what the next rollups carry;
//   - a PDU goes silent (snmpd stops serving its objects): it is reported
//     stale, counted in meters_stale, held stale_after windows, then its
//     rack and row fall back to the node figure (source NODE, degraded) —
//     never 0 W — while the hall stays metered by its switchgear;
//   - the switchgear goes silent too (pymodbus stopped): the hall falls
//     back to the node figure; the PDU back: the hall is metered by its
//     rows' meters; the switchgear back: by itself again;
//   - a row's collectors stop while its meters keep reading: the hall's
//     unaccounted_w grows by exactly their node power, the shipped
//     divergence rule fires at Alertmanager for the domains whose ratio
//     passes its threshold, and resolves when the collectors are back.
func TestHallFacilityPower(t *testing.T) {
	t.Parallel()
	div, stale := shippedRules(t, divergenceMetric), shippedRules(t, staleMetersMetric)
	h := startHall(t, hallOptions{rules: func(*hall) []rules.Rule { return append(slices.Clone(div), stale...) }})
	lowest := clearOf(div[0])
	for _, r := range div {
		lowest = min(lowest, clearOf(r), *r.Threshold)
	}
	base := state{meterW: h.baselineMeters(t, lowest/4), silent: map[string]bool{}, down: map[string]bool{}}
	h.serveAll(t, base)

	// The row whose collectors stop: its real collector and published nodes.
	r02, _ := h.topo.Domain("dc1", "h1", "r02")
	var r02Nodes []string
	for _, rk := range r02.Children {
		r02Nodes = append(r02Nodes, rk.Nodes...)
	}
	diverged := base.clone()
	for _, n := range r02Nodes {
		diverged.down[n] = true
	}
	// What the divergence rules must do, from the figures: quiet at the
	// baseline, firing where the ratio passes the threshold with r02 down.
	fire := map[string][]string{}
	for _, r := range div {
		before, after := h.expect(base), h.expect(diverged)
		for _, d := range selected(h.topo, r) {
			if ratio, ok := before[d.Key()].unaccountedRatio(); ok && ratio >= clearOf(r) {
				t.Fatalf("rule %s: %s's baseline ratio %.3f is not below clear %.3f: the scenario's losses are too high", r.Name, d.Key(), ratio, clearOf(r))
			}
			if ratio, ok := after[d.Key()].unaccountedRatio(); ok && ratio > *r.Threshold {
				fire[r.Name] = append(fire[r.Name], d.Key())
			}
		}
		if len(fire[r.Name]) == 0 {
			t.Fatalf("rule %s (level %q, threshold %v): no domain's ratio passes it with row r02 down: the scenario cannot show it", r.Name, r.Level, *r.Threshold)
		}
	}

	t.Run("figures", func(t *testing.T) {
		h.waitCollectors(t)
		h.crossCheckSNMP(t, base)
		h.waitFigures(t, time.Now(), "all meters fresh, all nodes reporting", base)
		// The switchgear reads 2 kW more, a PDU 100 W less: the hall's and
		// the rack's facility power follow; then back.
		s := base.clone()
		s.meterW["swgr-h1"] += 2000
		s.meterW["pdu-h1-r02-rk03-a"] -= 100
		changed := time.Now()
		h.serveAll(t, s)
		h.waitFigures(t, changed, "the meters' new values", s)
		changed = time.Now()
		h.serveAll(t, base)
		h.waitFigures(t, changed, "the meters' values back", base)

		// The BMC and the ACPI power meter read 300 W and 100 W more: the
		// collectors' reports and the node figures follow; then back.
		h.setNodePower(t, "n-redfish", redfishW+300)
		h.setNodePower(t, "n-hwmon", hwmonW+100)
		changed = time.Now()
		h.waitCollectors(t)
		h.waitFigures(t, changed, "the BMC's and the power meter's new values", base)
		h.setNodePower(t, "n-redfish", redfishW)
		h.setNodePower(t, "n-hwmon", hwmonW)
		changed = time.Now()
		h.waitCollectors(t)
		h.waitFigures(t, changed, "the node power values back", base)
	})

	t.Run("meter_silent", func(t *testing.T) {
		const pdu = "pdu-h1-r01-rk02-a"
		s := base.clone()
		s.silent[pdu] = true
		silenced := time.Now()
		h.silenceSNMPMeter(pdu)
		end := h.waitFigures(t, silenced, "PDU "+pdu+" silent", s)

		// The poller reported it stale, with why, never with 0 W.
		staleAt, why := h.meterRx.firstStale(pdu, silenced)
		if staleAt == 0 || why == "" {
			t.Fatalf("no stale report of %s with its error after it went silent", pdu)
		}
		// Held for stale_after windows after its last fresh reading, then
		// the node figure.
		lastFresh := h.meterRx.lastFresh(pdu, end)
		if lastFresh == 0 {
			t.Fatalf("no fresh report of %s before it went silent", pdu)
		}
		// The stale meters rule fires where the silent PDU is counted.
		for _, r := range stale {
			h.waitStaleAlert(t, r, s)
		}
		t.Logf("%s: last fresh window %s, first stale report %s, rollups through %s",
			pdu, fmtNs(lastFresh), fmtNs(staleAt), fmtNs(end))

		rk02 := "dc1/h1/r01/rk02"
		var firstNode int64
		for _, r := range h.rollups.series(rk02, lastFresh, end) {
			if r.GetFacilitySource() == telemetry.FacilitySource_FACILITY_SOURCE_NODE {
				firstNode = r.GetWindowEndUnixNs()
				break
			}
			if r.MeteredW == nil || r.GetMeteredW() != float64(base.meterW[pdu]) || r.GetMetersStale() != 0 {
				t.Errorf("window %d after the last fresh reading: metered_w %v meters_stale %d, want %d held, 0 stale",
					(r.GetWindowEndUnixNs()-lastFresh)/int64(window), r.MeteredW, r.GetMetersStale(), base.meterW[pdu])
			}
		}
		if firstNode == 0 {
			t.Fatalf("no rollup of %s from the node figure between the last fresh reading and window %d", rk02, end)
		}
		// Fresh for window k counts for k and is held for stale_after more:
		// the fallback is at k + stale_after + 1 (k + stale_after when the
		// last fresh report itself arrived after its window's grace).
		n := (firstNode - lastFresh) / int64(window)
		t.Logf("%s: from the node figure at window %s, %d windows after the last fresh reading", rk02, fmtNs(firstNode), n)
		if n != staleAfter+1 && n != staleAfter {
			t.Errorf("%s fell back to the node figure %d windows after its PDU's last fresh reading, want %d (stale_after %d)", rk02, n, staleAfter+1, staleAfter)
		}

		// The switchgear goes silent too: the hall has no meter figure
		// (its row r01 is not metered): node figure, degraded.
		s2 := s.clone()
		s2.silent["swgr-h1"] = true
		stopped := time.Now()
		h.mbus.Kill()
		h.waitFigures(t, stopped, "switchgear and a PDU silent", s2)

		// The PDU answers again: the hall is metered by its rows' PDUs
		// while its own switchgear is still silent.
		s3 := s2.clone()
		delete(s3.silent, pdu)
		back := time.Now()
		h.serveMeter(t, pdu, s3.meterW[pdu])
		h.waitFigures(t, back, "PDU back, switchgear silent", s3)

		// The switchgear answers again: everything as before.
		back = time.Now()
		h.mbus.Restart()
		h.waitFigures(t, back, "switchgear back", base)
		for _, r := range stale {
			waitAM(t, h.am.URL, r.Name, nil, "every meter back")
		}
	})

	t.Run("divergence", func(t *testing.T) {
		h.waitFigures(t, time.Now(), "before the row's collectors stop", base)
		for _, r := range div {
			waitAM(t, h.am.URL, r.Name, nil, "before the row's collectors stop")
		}
		// Row r02's collectors stop; its PDUs keep reading.
		stopped := time.Now()
		for _, n := range r02Nodes {
			if h.nodes[n].real() {
				h.stopCollector(n)
			}
		}
		h.pub.setDown(true, r02Nodes...)
		h.waitFigures(t, stopped, "row r02's collectors stopped", diverged)
		// Exactly their node power is now unaccounted at the hall.
		hb, hd := h.expect(base)["dc1/h1"], h.expect(diverged)["dc1/h1"]
		var r02W int64
		for _, n := range r02Nodes {
			r02W += h.nodes[n].nodeW
		}
		if got := (*hd.metered - hd.nodeW) - (*hb.metered - hb.nodeW); got != r02W {
			t.Fatalf("expectation: unaccounted grows by %d W, want r02's %d W", got, r02W)
		}
		for _, r := range div {
			as := waitAM(t, h.am.URL, r.Name, fire[r.Name], "row r02's collectors stopped")
			for _, a := range as {
				if a.Labels["level"] != r.Level && r.Level != "" {
					t.Errorf("alert %v: level label %q, want %q", a.Labels, a.Labels["level"], r.Level)
				}
			}
		}

		// The collectors come back: the figures and the alert resolve.
		back := time.Now()
		h.pub.setDown(false, r02Nodes...)
		for _, n := range r02Nodes {
			if h.nodes[n].real() {
				h.startCollector(t, n)
			}
		}
		h.waitFigures(t, back, "row r02's collectors back", base)
		for _, r := range div {
			waitAM(t, h.am.URL, r.Name, nil, "row r02's collectors back")
		}
	})
}
