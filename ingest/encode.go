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
)

// gpuIndexTags holds "0".."255" so that the gpu tag costs no allocation.
var gpuIndexTags = func() (t [256]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

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

func (e *lpEncoder) locTags(r *telemetry.NodeReport) {
	e.enc.AddTag("hall", r.Hall)
	e.enc.AddTag("node", r.Node)
	e.enc.AddTag("rack", r.Rack)
	e.enc.AddTag("row", r.Row)
	e.enc.AddTag("site", r.Site)
}

// nodeLine writes the node point of r: power_w (sum over healthy GPUs),
// power_max_w (max slot), gpus, gpus_healthy.
func (e *lpEncoder) nodeLine(r *telemetry.NodeReport, ts time.Time) {
	var sum float64
	var healthy, havePower int64
	for _, g := range r.Gpus {
		if g.Health != telemetry.Health_HEALTH_OK {
			continue
		}
		healthy++
		if g.PowerMw != nil {
			sum += telemetry.MilliwattsToW(*g.PowerMw)
			havePower++
		}
	}
	e.enc.StartLine(measNode)
	e.enc.AddTag("hall", r.Hall)
	e.enc.AddTag("node", r.Node)
	e.enc.AddTag("rack", r.Rack)
	e.enc.AddTag("row", r.Row)
	e.enc.AddTag("site", r.Site)
	e.int("gpus", int64(len(r.Gpus)))
	e.int("gpus_healthy", healthy)
	if len(r.SlotPowerW) > 0 {
		mx := uint32(0)
		for _, p := range r.SlotPowerW {
			mx = max(mx, p)
		}
		e.float("power_max_w", float64(mx))
	}
	if havePower > 0 {
		e.float("power_w", sum)
	}
	e.enc.EndLine(ts)
}

// gpuLine writes one gpu point; absent optional fields stay absent.
func (e *lpEncoder) gpuLine(r *telemetry.NodeReport, g *telemetry.Gpu, ts time.Time) {
	e.enc.StartLine(measGPU)
	idx := strconv.FormatUint(uint64(g.Index), 10)
	if g.Index < uint32(len(gpuIndexTags)) {
		idx = gpuIndexTags[g.Index]
	}
	e.enc.AddTag("gpu", idx)
	e.locTags(r)
	if g.EnergyMj != nil {
		e.int("energy_mj", int64(*g.EnergyMj)) // checked ≤ MaxInt64
	}
	e.enc.AddField("healthy", lineprotocol.BoolValue(g.Health == telemetry.Health_HEALTH_OK))
	if g.MemTempC != nil {
		e.float("mem_temp_c", float64(*g.MemTempC))
	}
	if g.PowerLimitMw != nil {
		e.float("power_limit_w", telemetry.MilliwattsToW(*g.PowerLimitMw))
	}
	if g.PowerMaxMw != nil {
		e.float("power_max_w", telemetry.MilliwattsToW(*g.PowerMaxMw))
	}
	if g.PowerMinMw != nil {
		e.float("power_min_w", telemetry.MilliwattsToW(*g.PowerMinMw))
	}
	if g.PowerMw != nil {
		e.float("power_w", telemetry.MilliwattsToW(*g.PowerMw))
	}
	if g.SmClockMhz != nil {
		e.float("sm_clock_mhz", float64(*g.SmClockMhz))
	}
	if g.TempC != nil {
		e.float("temp_c", float64(*g.TempC))
	}
	if g.ThrottleReasons != nil {
		e.int("throttle_reasons", int64(*g.ThrottleReasons)) // checked ≤ MaxInt64
	}
	if g.UtilPct != nil {
		e.float("util_pct", float64(*g.UtilPct))
	}
	e.enc.EndLine(ts)
}

// report writes the node point and, when gpus is set, every GPU's point.
// It returns the number of lines written; on error the buffer is unchanged.
func (e *lpEncoder) report(r *telemetry.NodeReport, gpus bool) (int, error) {
	// The hot path: up to nine lines share the report's five location tags.
	// Measurement and keys are constants, and once the tag values pass the
	// subject-token check (no control characters, no invalid UTF-8) the
	// encoder's per-line validation adds nothing: skip it (lax).
	if telemetry.ReportLocation(r).Validate() == nil {
		e.enc.SetLax(true)
		defer e.enc.SetLax(false)
	}
	start := len(e.enc.Bytes())
	ts := time.Unix(0, r.WindowEndUnixNs)
	e.nodeLine(r, ts)
	n := 1
	if gpus {
		for _, g := range r.Gpus {
			e.gpuLine(r, g, ts)
			n++
		}
	}
	return e.done(start, n)
}

// gpuLines writes downsampled gpu points (gpu_every > 1).
func (e *lpEncoder) gpuLines(r *telemetry.NodeReport, gs []*telemetry.Gpu, ts time.Time) (int, error) {
	start := len(e.enc.Bytes())
	for _, g := range gs {
		e.gpuLine(r, g, ts)
	}
	return e.done(start, len(gs))
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
	e.float("capacity_mw", capMW)
	if r.NodesExpected > 0 {
		e.float("coverage", float64(r.NodesReporting)/float64(r.NodesExpected))
	}
	e.float("headroom_mw", capMW-powMW)
	e.int("nodes_expected", int64(r.NodesExpected))
	e.int("nodes_reporting", int64(r.NodesReporting))
	if r.OscFreqHz != nil {
		e.float("osc_freq_hz", *r.OscFreqHz)
	}
	if r.OscW != nil {
		e.float("osc_mw", telemetry.WToMW(*r.OscW))
	}
	e.float("power_est_mw", telemetry.WToMW(r.PowerEstW))
	e.float("power_max_mw", telemetry.WToMW(r.PowerMaxW))
	e.float("power_mw", powMW)
	if r.RampWPerS != nil {
		e.float("ramp_mw_per_s", telemetry.WToMW(*r.RampWPerS))
	}
	if r.SwingW != nil {
		e.float("swing_mw", telemetry.WToMW(*r.SwingW))
	}
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
