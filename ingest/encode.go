package ingest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// Measurements of DESIGN.md's InfluxDB schema.
const (
	measGPU    = "gpu"
	measNode   = "node"
	measRollup = "rollup"
	measAlert  = "alert"
	measMeter  = "meter"
)

// Indexes of the measurements in measurementNames.
const (
	iGPU = iota
	iNode
	iRollup
	iAlert
	iMeter
)

// lpEncoder appends DESIGN.md's points to a line-protocol buffer without
// allocating per point. It is not safe for concurrent use.
type lpEncoder struct {
	enc lineprotocol.Encoder
	bad bool // a non-finite float was skipped (checks should prevent it)
	// levels are the topology levels (site, hall, row, rack, ...) that tag
	// rollup paths; order[i] is the index into levels of the i-th tag in
	// lexical order ("level" sorts among them).
	levels []string
	order  []int
	// meterTags: the meter measurement's tag keys in lexical order (set on first use).
	meterTags []meterTag
	// The report hot path (see tagBlock).
	tagEnc lineprotocol.Encoder
	tagBuf []byte // "node" + tags
	tags   []byte // a report's escaped location tags
	ts     []byte // " <timestamp>\n"
}

func newLPEncoder(levels []string) *lpEncoder {
	e := &lpEncoder{levels: levels}
	e.enc.SetPrecision(lineprotocol.Nanosecond)
	idx := make([]int, len(levels))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		switch {
		case levels[a] < levels[b]:
			return -1
		case levels[a] > levels[b]:
			return 1
		}
		return 0
	})
	e.order = idx
	return e
}

// buf returns the encoded lines.
func (e *lpEncoder) buf() []byte { return e.enc.Bytes() }

// reset starts a new buffer reusing b's storage.
func (e *lpEncoder) reset(b []byte) { e.enc.SetBuffer(b[:0]) }

// truncate drops everything after n bytes (a message that failed midway).
func (e *lpEncoder) truncate(n int) { e.enc.SetBuffer(e.enc.Bytes()[:n]) }

// done ends a message begun at start: on error it drops the message's lines.
func (e *lpEncoder) done(start, lines int) (int, error) {
	err := e.enc.Err()
	if err == nil && e.bad {
		err = errors.New("non-finite field value")
	}
	if err != nil {
		e.bad = false
		e.truncate(start)
		return 0, err
	}
	return lines, nil
}

func (e *lpEncoder) float(key string, v float64) {
	fv, ok := lineprotocol.FloatValue(v)
	if !ok {
		e.bad = true
		return
	}
	e.enc.AddField(key, fv)
}

func (e *lpEncoder) int(key string, v int64) { e.enc.AddField(key, lineprotocol.IntValue(v)) }

// The hot path: a report's node and GPU lines share its five location
// tags, and every measurement and field key is a constant that needs no
// escaping. line-protocol/v2's Encoder escapes every key and tag value on
// every line (a strings.Count per escapable character: a third of ingest's
// CPU), so report and gpuLines let the library escape the tag block once
// per report and append the rest: constant keys, and values formatted
// exactly as lineprotocol.Value.AppendBytes would (TestFastEncodeMatchesLibrary
// and FuzzEncode compare both encoders byte for byte).

// tagBlock sets e.tags to r's escaped location tags,
// ",hall=…,node=…,rack=…,row=…,site=…". Values that line-protocol/v2 would
// copy unchanged (printable ASCII without ',', '=', ' ' or '\\') are
// appended as they are; any other goes through the library's Encoder.
func (e *lpEncoder) tagBlock(r *telemetry.NodeReport) error {
	if plainTag(r.Hall) && plainTag(r.Node) && plainTag(r.Rack) && plainTag(r.Row) && plainTag(r.Site) {
		b := append(e.tagBuf[:0], measNode...)
		b = append(append(b, ",hall="...), r.Hall...)
		b = append(append(b, ",node="...), r.Node...)
		b = append(append(b, ",rack="...), r.Rack...)
		b = append(append(b, ",row="...), r.Row...)
		b = append(append(b, ",site="...), r.Site...)
		e.tagBuf = b
		e.tags = b[len(measNode):]
		return nil
	}
	t := &e.tagEnc
	t.SetBuffer(e.tagBuf[:0])
	// Once the tag values pass the subject-token check (no control
	// characters, no invalid UTF-8) the encoder's validation adds nothing.
	t.SetLax(telemetry.ReportLocation(r).Validate() == nil)
	t.StartLine(measNode)
	t.AddTag("hall", r.Hall)
	t.AddTag("node", r.Node)
	t.AddTag("rack", r.Rack)
	t.AddTag("row", r.Row)
	t.AddTag("site", r.Site)
	if err := t.Err(); err != nil {
		return err
	}
	e.tagBuf = t.Bytes()
	e.tags = e.tagBuf[len(measNode):]
	return nil
}

// plainTag reports whether line-protocol/v2 encodes the tag value s as s
// itself: non-empty printable ASCII with nothing to escape and no backslash.
func plainTag(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == ',' || c == '=' || c == '\\' {
			return false
		}
	}
	return true
}

// setTime sets e.ts, the " <timestamp>\n" that ends each of a report's lines.
func (e *lpEncoder) setTime(ns int64) {
	e.ts = append(e.ts[:0], ' ')
	e.ts = strconv.AppendInt(e.ts, ns, 10)
	e.ts = append(e.ts, '\n')
}

// appendNode appends the node point of r: power_w (sum over healthy GPUs),
// power_max_w (max slot), gpus, gpus_healthy.
func (e *lpEncoder) appendNode(b []byte, r *telemetry.NodeReport) []byte {
	var sumMw uint64
	var healthy, havePower uint64
	for _, g := range r.Gpus {
		if g.Health != telemetry.Health_HEALTH_OK {
			continue
		}
		healthy++
		if g.PowerMw != nil {
			sumMw += uint64(*g.PowerMw)
			havePower++
		}
	}
	b = append(b, measNode...)
	b = append(b, e.tags...)
	if r.CpuPowerMw != nil {
		b = append(b, " cpu_power_w="...)
		b = appendMilli(b, uint64(*r.CpuPowerMw))
		b = append(b, ",gpus="...)
	} else {
		b = append(b, " gpus="...)
	}
	b = appendDec(b, uint64(len(r.Gpus)))
	b = append(b, "i,gpus_healthy="...)
	b = appendDec(b, healthy)
	b = append(b, 'i')
	if r.NodeEnergyMj != nil {
		b = append(b, ",node_energy_mj="...)
		b = appendDec(b, *r.NodeEnergyMj) // checked ≤ MaxInt64
		b = append(b, 'i')
	}
	if r.NodePowerMw != nil {
		b = append(b, ",node_power_source=\""...)
		b = append(b, nodePowerSourceName(r.NodePowerSource)...)
		b = append(b, "\",node_power_w="...)
		b = appendMilli(b, uint64(*r.NodePowerMw))
	}
	if len(r.SlotPowerW) > 0 {
		mx := uint32(0)
		for _, p := range r.SlotPowerW {
			mx = max(mx, p)
		}
		b = append(b, ",power_max_w="...)
		b = appendIntFloat(b, int64(mx))
	}
	if havePower > 0 {
		b = append(b, ",power_w="...)
		b = appendMilli(b, sumMw)
	}
	return append(b, e.ts...)
}

// appendGPU appends one gpu point; absent optional fields stay absent.
func (e *lpEncoder) appendGPU(b []byte, g *telemetry.Gpu) []byte {
	b = append(b, measGPU+",gpu="...)
	b = appendDec(b, uint64(g.Index))
	b = append(b, e.tags...)
	if g.EnergyMj != nil {
		b = append(b, " energy_mj="...)
		b = appendDec(b, *g.EnergyMj) // checked ≤ MaxInt64
		b = append(b, "i,healthy="...)
	} else {
		b = append(b, " healthy="...)
	}
	if g.Health == telemetry.Health_HEALTH_OK {
		b = append(b, "true"...)
	} else {
		// The kind of failure, only on failed GPUs (absent = ok): a
		// string field before "healthy" in key order, so it is spliced in.
		b = b[:len(b)-len("healthy=")]
		b = append(b, "health=\""...)
		b = append(b, healthName(g.Health)...)
		b = append(b, "\",healthy=false"...)
	}
	if g.MemTempC != nil {
		b = append(b, ",mem_temp_c="...)
		b = appendIntFloat(b, int64(*g.MemTempC))
	}
	if g.PowerLimitMw != nil {
		b = append(b, ",power_limit_w="...)
		b = appendMilli(b, uint64(*g.PowerLimitMw))
	}
	if g.PowerMaxMw != nil {
		b = append(b, ",power_max_w="...)
		b = appendMilli(b, uint64(*g.PowerMaxMw))
	}
	if g.PowerMinMw != nil {
		b = append(b, ",power_min_w="...)
		b = appendMilli(b, uint64(*g.PowerMinMw))
	}
	if g.PowerMw != nil {
		b = append(b, ",power_w="...)
		b = appendMilli(b, uint64(*g.PowerMw))
	}
	if g.SmClockMhz != nil {
		b = append(b, ",sm_clock_mhz="...)
		b = appendIntFloat(b, int64(*g.SmClockMhz))
	}
	if g.TempC != nil {
		b = append(b, ",temp_c="...)
		b = appendIntFloat(b, int64(*g.TempC))
	}
	if g.ThrottleReasons != nil {
		b = append(b, ",throttle_reasons="...)
		b = appendDec(b, *g.ThrottleReasons) // checked ≤ MaxInt64
		b = append(b, 'i')
	}
	if g.UtilPct != nil {
		b = append(b, ",util_pct="...)
		b = appendIntFloat(b, int64(*g.UtilPct))
	}
	return append(b, e.ts...)
}

// healthName is a failed GPU's health kind: lost, timeout, error (or
// unknown for a value this version does not know).
func healthName(h telemetry.Health) string {
	switch h {
	case telemetry.Health_HEALTH_LOST:
		return "lost"
	case telemetry.Health_HEALTH_TIMEOUT:
		return "timeout"
	case telemetry.Health_HEALTH_ERROR:
		return "error"
	}
	return "unknown"
}

// nodePowerSourceName is the node_power_source field: redfish, hwmon,
// model, none (or unknown).
func nodePowerSourceName(s telemetry.NodePowerSource) string {
	switch s {
	case telemetry.NodePowerSource_NODE_POWER_NONE:
		return "none"
	case telemetry.NodePowerSource_NODE_POWER_REDFISH:
		return "redfish"
	case telemetry.NodePowerSource_NODE_POWER_HWMON:
		return "hwmon"
	case telemetry.NodePowerSource_NODE_POWER_MODEL:
		return "model"
	}
	return "unknown"
}

// appendIntFloat appends the float field value float64(v) as
// lineprotocol.Value.AppendBytes does (strconv 'g', shortest): below 1e6 in
// magnitude that is v's decimal digits.
func appendIntFloat(b []byte, v int64) []byte {
	switch {
	case v >= 0 && v < 1e6:
		return appendDec(b, uint64(v))
	case v < 0 && v > -1e6:
		return appendDec(append(b, '-'), uint64(-v))
	}
	fv, _ := lineprotocol.FloatValue(float64(v))
	return fv.AppendBytes(b)
}

// appendMilli appends the float field value float64(m)/1000 (milliunits to
// units) as lineprotocol.Value.AppendBytes does. Below 1e9 the shortest
// decimal that round-trips is m/1000 itself, at most three decimals,
// trailing zeros dropped; 'g' uses an exponent only from 1e6 up.
func appendMilli(b []byte, m uint64) []byte {
	if m >= 1e9 {
		fv, _ := lineprotocol.FloatValue(float64(m) / 1000)
		return fv.AppendBytes(b)
	}
	b = appendDec(b, m/1000)
	f := m % 1000
	switch {
	case f == 0:
		return b
	case f%100 == 0:
		return append(b, '.', byte('0'+f/100))
	case f%10 == 0:
		return append(b, '.', byte('0'+f/100), byte('0'+f/10%10))
	}
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}

// appendDec appends v's decimal digits, written in place: strconv's
// AppendUint formats into a scratch array and copies, which costs more
// than the digits for the short numbers of a GPU line.
func appendDec(b []byte, v uint64) []byte {
	n := 1
	for x := v; x >= 10; x /= 10 {
		n++
	}
	b = slices.Grow(b, n)
	b = b[:len(b)+n]
	for i := len(b) - 1; n > 0; n-- {
		b[i] = byte('0' + v%10)
		v /= 10
		i--
	}
	return b
}

// report writes the node point and, when gpus is set, every GPU's point.
// It returns the number of lines written; on error the buffer is unchanged.
func (e *lpEncoder) report(r *telemetry.NodeReport, gpus bool) (int, error) {
	var gs []*telemetry.Gpu
	if gpus {
		gs = r.Gpus
	}
	return e.lines(r, true, gs)
}

// gpuLines writes downsampled gpu points (gpu_every > 1) at r's window end.
func (e *lpEncoder) gpuLines(r *telemetry.NodeReport, gs []*telemetry.Gpu) (int, error) {
	return e.lines(r, false, gs)
}

// gpuLinesAfter is gpuLines for r right after from encoded r's node point:
// it reuses from's escaped tag block and timestamp instead of building them
// again (node and gpu points in different lanes).
func (e *lpEncoder) gpuLinesAfter(from *lpEncoder, r *telemetry.NodeReport, gs []*telemetry.Gpu) (int, error) {
	if from == e {
		return e.gpuLines(r, gs)
	}
	e.tags = append(e.tagBuf[:0], from.tags...)
	e.tagBuf = e.tags
	e.ts = append(e.ts[:0], from.ts...)
	b := e.enc.Bytes()
	for _, g := range gs {
		b = e.appendGPU(b, g)
	}
	e.enc.SetBuffer(b)
	return len(gs), nil
}

// lines appends r's node point (if node) and the points of gs, all at r's
// window end with r's location tags.
func (e *lpEncoder) lines(r *telemetry.NodeReport, node bool, gs []*telemetry.Gpu) (int, error) {
	if err := e.tagBlock(r); err != nil {
		return 0, err
	}
	e.setTime(r.WindowEndUnixNs)
	b := e.enc.Bytes()
	n := len(gs)
	if node {
		b = e.appendNode(b, r)
		n++
	}
	for _, g := range gs {
		b = e.appendGPU(b, g)
	}
	e.enc.SetBuffer(b)
	return n, nil
}

// rollup writes the rollup point: MW fields from the watt fields, tags
// level plus path[i] under levels[i].
func (e *lpEncoder) rollup(level string, path []string, r *telemetry.Rollup) (int, error) {
	if len(path) > len(e.levels) {
		return 0, fmt.Errorf("rollup path has %d tokens, topology has %d levels", len(path), len(e.levels))
	}
	start := len(e.enc.Bytes())
	e.enc.StartLine(measRollup)
	levelDone := false
	for _, li := range e.order {
		if !levelDone && "level" < e.levels[li] {
			e.enc.AddTag("level", level)
			levelDone = true
		}
		if li < len(path) {
			e.enc.AddTag(e.levels[li], path[li])
		}
	}
	if !levelDone {
		e.enc.AddTag("level", level)
	}
	capMW := telemetry.WToMW(r.CapacityW)
	powMW := telemetry.WToMW(r.PowerW)
	estMW := telemetry.WToMW(r.PowerEstW)
	// Facility fields (wire 40-57) only from an aggregator that computes
	// them (facility_source set): an older one sends zeros, which must not
	// read as 0 W. Optional ones only when present.
	fac := r.FacilitySource != telemetry.FacilitySource_FACILITY_SOURCE_UNSPECIFIED
	optMW := func(key string, v *float64) {
		if v != nil {
			e.float(key, telemetry.WToMW(*v))
		}
	}
	e.float("capacity_mw", capMW)
	if r.ContinuityDeltaW != nil {
		e.float("continuity_delta_mw", telemetry.WToMW(*r.ContinuityDeltaW))
	}
	if r.NodesExpected > 0 {
		e.float("coverage", float64(r.NodesReporting)/float64(r.NodesExpected))
	}
	optMW("cpu_power_mw", r.CpuPowerW)
	// degraded: coverage below the aggregator's resolve_min_coverage, the
	// figures partly estimated (docs/alerts.md, Missing data).
	e.enc.AddField("degraded", lineprotocol.BoolValue(r.Degraded))
	optMW("facility_continuity_delta_mw", r.FacilityContinuityDeltaW)
	if fac {
		e.enc.AddField("facility_degraded", lineprotocol.BoolValue(r.FacilityDegraded))
		e.float("facility_max_mw", telemetry.WToMW(r.FacilityPowerMaxW))
		e.float("facility_mw", telemetry.WToMW(r.FacilityPowerW))
	}
	if r.FacilityOscFreqHz != nil {
		e.float("facility_osc_freq_hz", *r.FacilityOscFreqHz)
	}
	optMW("facility_osc_mw", r.FacilityOscW)
	optMW("facility_ramp_mw_per_s", r.FacilityRampWPerS)
	if fac {
		e.str("facility_source", facilitySourceName(r.FacilitySource))
	}
	optMW("facility_swing_mw", r.FacilitySwingW)
	if r.GpuTempMaxC != nil {
		e.float("gpu_temp_max_c", float64(*r.GpuTempMaxC))
	}
	e.int("gpus", int64(r.Gpus))
	e.int("gpus_healthy", int64(r.GpusHealthy))
	// Headroom as the alerts rules evaluate it: on the facility figure
	// when the rollup has one, else on the GPU estimate (missing nodes
	// never read as headroom).
	if fac {
		e.float("headroom_mw", capMW-telemetry.WToMW(r.FacilityPowerW))
	} else {
		e.float("headroom_mw", capMW-estMW)
	}
	e.int("lag_ms", int64(r.LagMs))
	if r.MemTempMaxC != nil {
		e.float("mem_temp_max_c", float64(*r.MemTempMaxC))
	}
	optMW("metered_mw", r.MeteredW)
	if fac {
		e.int("meters", int64(r.Meters))
		e.int("meters_stale", int64(r.MetersStale))
		e.float("node_power_est_mw", telemetry.WToMW(r.NodePowerEstW))
		e.float("node_power_modeled_mw", telemetry.WToMW(r.NodePowerModeledW))
		e.float("node_power_mw", telemetry.WToMW(r.NodePowerW))
	}
	e.int("nodes_expected", int64(r.NodesExpected))
	if fac {
		e.int("nodes_power_measured", int64(r.NodesPowerMeasured))
	}
	e.int("nodes_reporting", int64(r.NodesReporting))
	if r.OscFreqHz != nil {
		e.float("osc_freq_hz", *r.OscFreqHz)
	}
	if r.OscW != nil {
		e.float("osc_mw", telemetry.WToMW(*r.OscW))
	}
	e.float("power_est_mw", estMW)
	if r.PowerMaxEstW != 0 {
		e.float("power_max_est_mw", telemetry.WToMW(r.PowerMaxEstW))
	}
	e.float("power_max_mw", telemetry.WToMW(r.PowerMaxW))
	e.float("power_mw", powMW)
	if r.RampWPerS != nil {
		e.float("ramp_mw_per_s", telemetry.WToMW(*r.RampWPerS))
	}
	e.int("stale_nodes", int64(r.StaleNodes))
	if r.SwingW != nil {
		e.float("swing_mw", telemetry.WToMW(*r.SwingW))
	}
	e.int("throttled_gpus", int64(r.ThrottledGpus))
	optMW("unaccounted_mw", r.UnaccountedW)
	e.enc.EndLine(time.Unix(0, r.WindowEndUnixNs))
	return e.done(start, 1)
}

// alert writes the alert point (tags rule, severity, level, domain).
func (e *lpEncoder) alert(severity, rule string, a *telemetry.AlertEvent) (int, error) {
	start := len(e.enc.Bytes())
	e.enc.StartLine(measAlert)
	if a.Domain != "" {
		e.enc.AddTag("domain", a.Domain)
	}
	if a.Level != "" {
		e.enc.AddTag("level", a.Level)
	}
	e.enc.AddTag("rule", rule)
	e.enc.AddTag("severity", severity)
	msg, ok := lineprotocol.StringValue(a.Message)
	if !ok {
		e.truncate(start)
		return 0, errors.New("alert message is not valid UTF-8")
	}
	e.enc.AddField("message", msg)
	st, _ := lineprotocol.StringValue(stateName(a.State))
	e.enc.AddField("state", st)
	e.float("threshold", a.Threshold)
	e.float("value", a.Value)
	e.enc.EndLine(time.Unix(0, a.AtUnixNs))
	return e.done(start, 1)
}

// facilitySourceName is the facility_source field: meter or node.
func facilitySourceName(s telemetry.FacilitySource) string {
	switch s {
	case telemetry.FacilitySource_FACILITY_SOURCE_METER:
		return "meter"
	case telemetry.FacilitySource_FACILITY_SOURCE_NODE:
		return "node"
	}
	return "unknown"
}

// stateName is "inactive", "pending", "firing" or "resolved".
func stateName(s telemetry.AlertState) string {
	switch s {
	case telemetry.AlertState_ALERT_STATE_INACTIVE:
		return "inactive"
	case telemetry.AlertState_ALERT_STATE_PENDING:
		return "pending"
	case telemetry.AlertState_ALERT_STATE_FIRING:
		return "firing"
	case telemetry.AlertState_ALERT_STATE_RESOLVED:
		return "resolved"
	}
	return "unknown"
}

// finiteNonNeg reports whether v is a finite, non-negative number.
func finiteNonNeg(v float64) bool { return v >= 0 && !math.IsInf(v, 1) }
