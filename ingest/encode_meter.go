package ingest

import (
	"fmt"
	"slices"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// Tags of the meter measurement besides the path levels (docs/ingest.md,
// The meter measurement). report is "fresh" or "stale": a stale report is
// a series of its own, so that it can never overwrite or hide the fresh
// report of the same meter and window (InfluxDB 1.x merges the fields of
// points with the same series and timestamp), whatever the arrival order.
var meterFixedTags = [...]string{"feed", "level", "meter", "phase", "protocol", "report"}

// meterTag is one tag key of the meter measurement in lexical order: a
// fixed tag, or path level li.
type meterTag struct {
	key string
	li  int // index into levels; -1 for a fixed tag
}

// meterTags returns the meter tag keys in lexical order, or an error if a
// topology level is named like a fixed tag.
func meterTags(levels []string) ([]meterTag, error) {
	var out []meterTag
	for _, k := range meterFixedTags {
		if slices.Contains(levels, k) {
			return nil, fmt.Errorf("topology level %q is also a tag of the meter measurement (%v): rename the level", k, meterFixedTags)
		}
		out = append(out, meterTag{key: k, li: -1})
	}
	for i, l := range levels {
		out = append(out, meterTag{key: l, li: i})
	}
	slices.SortFunc(out, func(a, b meterTag) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	return out, nil
}

// meterProtocolName is the protocol tag: snmp, modbus, or unspecified.
func meterProtocolName(p telemetry.MeterProtocol) string {
	switch p {
	case telemetry.MeterProtocol_METER_PROTOCOL_SNMP:
		return "snmp"
	case telemetry.MeterProtocol_METER_PROTOCOL_MODBUS:
		return "modbus"
	case telemetry.MeterProtocol_METER_PROTOCOL_UNSPECIFIED:
		return "unspecified"
	}
	return "unknown"
}

// meter writes the meter point of a checked report at its window end:
// tags feed, level, the path levels, meter, phase, protocol, report
// (fresh/stale; feed and phase only when set); fields energy_wh and
// power_w when present, error (stale reports), poller, read_age_ms (window
// end − the last successful read, when there was one; never negative),
// seq, stale, window_ms.
func (e *lpEncoder) meter(r *telemetry.MeterReport) (int, error) {
	if e.meterTags == nil {
		mt, err := meterTags(e.levels)
		if err != nil {
			return 0, err
		}
		e.meterTags = mt
	}
	if len(r.Path) > len(e.levels) {
		return 0, fmt.Errorf("meter path has %d tokens, topology has %d levels", len(r.Path), len(e.levels))
	}
	start := len(e.enc.Bytes())
	e.enc.StartLine(measMeter)
	for _, t := range e.meterTags {
		var v string
		switch {
		case t.li >= 0:
			if t.li >= len(r.Path) {
				continue
			}
			v = r.Path[t.li]
		case t.key == "feed":
			v = r.Feed
		case t.key == "level":
			v = r.Level
		case t.key == "meter":
			v = r.Meter
		case t.key == "phase":
			v = r.Phase
		case t.key == "protocol":
			v = meterProtocolName(r.Protocol)
		case t.key == "report":
			v = "fresh"
			if r.Stale {
				v = "stale"
			}
		}
		if v != "" {
			e.enc.AddTag(t.key, v)
		}
	}
	if r.EnergyWh != nil {
		e.float("energy_wh", *r.EnergyWh)
	}
	if r.Stale && r.Error != "" {
		e.str("error", r.Error)
	}
	if r.Poller != "" {
		e.str("poller", r.Poller)
	}
	if r.PowerW != nil {
		e.float("power_w", *r.PowerW)
	}
	if r.ReadUnixNs > 0 {
		e.int("read_age_ms", max(0, (r.WindowEndUnixNs-r.ReadUnixNs)/1e6))
	}
	e.int("seq", int64(r.Seq)) // checked ≤ MaxInt64
	e.enc.AddField("stale", lineprotocol.BoolValue(r.Stale))
	e.int("window_ms", int64(r.WindowMs))
	e.enc.EndLine(time.Unix(0, r.WindowEndUnixNs))
	return e.done(start, 1)
}

// str adds a string field; invalid UTF-8 (checks prevent it) fails the line.
func (e *lpEncoder) str(key, v string) {
	sv, ok := lineprotocol.StringValue(v)
	if !ok {
		e.bad = true
		return
	}
	e.enc.AddField(key, sv)
}
