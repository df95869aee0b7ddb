package telemetry

import (
	"fmt"
	"strconv"
	"strings"
)

// Facility meter subjects and stream. A meter publishes one MeterReport per
// window to megawatch.v1.meter.<domain path...>.<meter>, e.g.
// megawatch.v1.meter.dc1.h1.r01.rk01.pdu-r01-rk01-a for a rack PDU or
// megawatch.v1.meter.dc1.h1.swgr-h1-main for a hall's switchgear meter.
const (
	MeterPrefix   = Prefix + ".meter"
	MeterWildcard = MeterPrefix + ".>"
	StreamMeter   = "MEGAWATCH_METER"
)

// MeterSubject is megawatch.v1.meter.<path...>.<meter>; path is the measured
// domain's names from the site down.
func MeterSubject(path []string, meter string) (string, error) {
	if len(path) == 0 {
		return "", fmt.Errorf("meter %q: empty domain path", meter)
	}
	var b strings.Builder
	b.Grow(len(MeterPrefix) + 16*len(path) + len(meter))
	b.WriteString(MeterPrefix)
	for i, p := range path {
		if err := ValidateToken(p); err != nil {
			return "", fmt.Errorf("meter path[%d]: %w", i, err)
		}
		b.WriteByte('.')
		b.WriteString(p)
	}
	if err := ValidateToken(meter); err != nil {
		return "", fmt.Errorf("meter: %w", err)
	}
	b.WriteByte('.')
	b.WriteString(meter)
	return b.String(), nil
}

// ParseMeterSubject is the inverse of MeterSubject: the domain path and the
// meter name.
func ParseMeterSubject(subject string) (path []string, meter string, err error) {
	rest, ok := strings.CutPrefix(subject, MeterPrefix+".")
	if !ok {
		return nil, "", fmt.Errorf("subject %q: not under %s", subject, MeterPrefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) < 2 {
		return nil, "", fmt.Errorf("subject %q: want <path...>.<meter> after %s", subject, MeterPrefix)
	}
	for i, p := range parts {
		if err := ValidateToken(p); err != nil {
			return nil, "", fmt.Errorf("subject %q: token %d: %w", subject, i, err)
		}
	}
	return parts[:len(parts)-1], parts[len(parts)-1], nil
}

// MeterMsgID is the JetStream dedup id of a meter's fresh report for a
// window: meter:<meter>:<window_end_unix_ms>. Two pollers of one meter (HA)
// publish the same id for the same window, so the stream stores one of them.
func MeterMsgID(meter string, windowEndUnixNs int64) string {
	return "meter:" + meter + ":" + strconv.FormatInt(windowEndUnixNs/1e6, 10)
}

// MeterStaleMsgID is the dedup id of a stale report for a window:
// meter:<meter>:<window_end_unix_ms>:stale. A poller that could not read
// the meter never masks the fresh report of its HA peer: for one window the
// stream holds at most one fresh and one stale report, and consumers take
// the fresh one when both are there.
func MeterStaleMsgID(meter string, windowEndUnixNs int64) string {
	return MeterMsgID(meter, windowEndUnixNs) + ":stale"
}

// MeterReportMsgID is MeterMsgID or MeterStaleMsgID, as r is fresh or stale.
func MeterReportMsgID(r *MeterReport) string {
	if r.GetStale() {
		return MeterStaleMsgID(r.GetMeter(), r.GetWindowEndUnixNs())
	}
	return MeterMsgID(r.GetMeter(), r.GetWindowEndUnixNs())
}
