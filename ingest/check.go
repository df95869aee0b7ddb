package ingest

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/megawatch/megawatch/internal/plausible"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// Dead-letter reasons: the last token of megawatch.v1.deadletter.<reason>
// and the value of the Megawatch-Deadletter-Reason header.
const (
	ReasonDecode    = "decode"    // not a protobuf message of the subject's kind
	ReasonSubject   = "subject"   // subject not under power, rollup or alert
	ReasonLocation  = "location"  // report location differs from its subject
	ReasonTimestamp = "timestamp" // window end outside [now − stream max age, now + future_skew]
	ReasonValue     = "value"     // a non-finite or negative value, or an int out of range
	ReasonEncode    = "encode"    // line protocol refused a tag or field (e.g. bad UTF-8)
	ReasonRejected  = "rejected"  // InfluxDB answered 400/422 for the message's points
	ReasonNoTarget  = "no_target" // no target's subject filter matches
	// ReasonImplausible: a value beyond the plausibility bounds (see
	// internal/plausible): a wrapped counter, a broken sensor.
	ReasonImplausible = "implausible"
	// ReasonForgedID: the report's Nats-Msg-Id names another node or
	// window (telemetry.CheckMsgID); such an id makes JetStream's dedup
	// drop the report it names.
	ReasonForgedID = "forged_id"
	// ReasonConflict: lines InfluxDB refused for a field type conflict
	// (payload: those lines as line protocol; the rest of the message was written).
	ReasonConflict = "conflict"
)

// Dead-letter headers beyond telemetry's.
const (
	// HeaderDeadFormat is "line-protocol" when the payload is the refused
	// lines rather than the original message.
	HeaderDeadFormat = "Megawatch-Deadletter-Format"
	// HeaderDeadField is the conflicting measurement.field (comma-separated).
	HeaderDeadField = "Megawatch-Deadletter-Field"
	// HeaderDeadTypes is "<ingest's type> (InfluxDB has <type>)" per field.
	HeaderDeadTypes = "Megawatch-Deadletter-Types"
)

// DeadLetterReasons lists every dead-letter reason (metrics are pre-created for them).
func DeadLetterReasons() []string {
	return []string{ReasonDecode, ReasonSubject, ReasonLocation, ReasonTimestamp, ReasonValue, ReasonEncode, ReasonRejected, ReasonNoTarget, ReasonImplausible, ReasonForgedID, ReasonConflict}
}

// poison is a message that cannot be written, with the reason it is dead-lettered for.
type poison struct {
	reason string
	err    error
}

func (p *poison) Error() string { return p.reason + ": " + p.err.Error() }
func (p *poison) Unwrap() error { return p.err }

func poisonf(reason, f string, a ...any) error {
	return &poison{reason: reason, err: fmt.Errorf(f, a...)}
}

// asPoison returns the reason of a poison error ("" if err is not one).
func asPoison(err error) (string, bool) {
	var p *poison
	if errors.As(err, &p) {
		return p.reason, true
	}
	return "", false
}

// timeWindow is the accepted range of point timestamps.
type timeWindow struct {
	maxAge, skew time.Duration
}

func (w timeWindow) check(ns int64, now time.Time) error {
	t := time.Unix(0, ns)
	if t.Before(now.Add(-w.maxAge)) || t.After(now.Add(w.skew)) {
		return poisonf(ReasonTimestamp, "timestamp %s outside [now-%s, now+%s]", t.UTC().Format(time.RFC3339Nano), w.maxAge, w.skew)
	}
	return nil
}

// locationMatches reports whether subject is exactly the power subject of
// r's location, without allocating.
func locationMatches(subject string, r *telemetry.NodeReport) bool {
	rest, ok := strings.CutPrefix(subject, telemetry.PowerPrefix+".")
	if !ok {
		return false
	}
	for i, tok := range [5]string{r.Site, r.Hall, r.Row, r.Rack, r.Node} {
		if tok == "" || strings.ContainsAny(tok, ".*> ") {
			return false
		}
		if i < 4 {
			rest, ok = strings.CutPrefix(rest, tok+".")
			if !ok {
				return false
			}
			continue
		}
		return rest == tok
	}
	return false
}

// checkReport validates a decoded node report against its subject and the
// plausibility bounds (nil: none).
func checkReport(subject string, r *telemetry.NodeReport, now time.Time, tw timeWindow, bounds *plausible.Bounds) error {
	if !locationMatches(subject, r) {
		return poisonf(ReasonLocation, "report location %s does not match subject %s", telemetry.ReportLocation(r), subject)
	}
	if err := telemetry.ReportLocation(r).Validate(); err != nil {
		return &poison{reason: ReasonLocation, err: err}
	}
	if err := tw.check(r.WindowEndUnixNs, now); err != nil {
		return err
	}
	if r.NodeEnergyMj != nil && *r.NodeEnergyMj > math.MaxInt64 {
		return poisonf(ReasonValue, "node_energy_mj %d exceeds int64", *r.NodeEnergyMj)
	}
	seen := uint64(0)
	for i, g := range r.Gpus {
		if g == nil {
			return poisonf(ReasonDecode, "gpus[%d]: nil", i)
		}
		if g.EnergyMj != nil && *g.EnergyMj > math.MaxInt64 {
			return poisonf(ReasonValue, "gpus[%d].energy_mj %d exceeds int64", i, *g.EnergyMj)
		}
		if g.ThrottleReasons != nil && *g.ThrottleReasons > math.MaxInt64 {
			return poisonf(ReasonValue, "gpus[%d].throttle_reasons %#x exceeds int64", i, *g.ThrottleReasons)
		}
		if g.Index < 64 {
			if seen&(1<<g.Index) != 0 {
				return poisonf(ReasonValue, "gpus[%d]: duplicate gpu index %d", i, g.Index)
			}
			seen |= 1 << g.Index
		}
	}
	if bounds != nil {
		if err := bounds.CheckReport(r); err != nil {
			return &poison{reason: ReasonImplausible, err: err}
		}
	}
	return nil
}

// checkRollup validates a rollup against its subject.
func checkRollup(level string, path []string, r *telemetry.Rollup, now time.Time, tw timeWindow, levels int) error {
	if r.Level != level || !equalStrings(r.Path, path) {
		return poisonf(ReasonLocation, "rollup %s %s does not match its subject (%s %s)", r.Level, strings.Join(r.Path, "/"), level, strings.Join(path, "/"))
	}
	if len(path) > levels {
		return poisonf(ReasonLocation, "rollup path %s is deeper than the topology's %d levels", strings.Join(path, "/"), levels)
	}
	if err := tw.check(r.WindowEndUnixNs, now); err != nil {
		return err
	}
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"power_w", r.PowerW}, {"power_est_w", r.PowerEstW}, {"power_max_w", r.PowerMaxW}, {"capacity_w", r.CapacityW},
		{"node_power_w", r.NodePowerW}, {"node_power_est_w", r.NodePowerEstW}, {"node_power_modeled_w", r.NodePowerModeledW},
		{"facility_power_w", r.FacilityPowerW}, {"facility_power_max_w", r.FacilityPowerMaxW}} {
		if !finiteNonNeg(f.v) {
			return poisonf(ReasonValue, "%s is %v", f.name, f.v)
		}
	}
	for _, f := range [...]struct {
		name string
		v    *float64
	}{{"swing_w", r.SwingW}, {"osc_freq_hz", r.OscFreqHz}, {"osc_w", r.OscW}, {"metered_w", r.MeteredW}, {"cpu_power_w", r.CpuPowerW},
		{"facility_swing_w", r.FacilitySwingW}, {"facility_osc_freq_hz", r.FacilityOscFreqHz}, {"facility_osc_w", r.FacilityOscW}} {
		if f.v != nil && !finiteNonNeg(*f.v) {
			return poisonf(ReasonValue, "%s is %v", f.name, *f.v)
		}
	}
	// Signed: a ramp, a change, metered minus node power.
	for _, f := range [...]struct {
		name string
		v    *float64
	}{{"ramp_w_per_s", r.RampWPerS}, {"facility_ramp_w_per_s", r.FacilityRampWPerS}, {"unaccounted_w", r.UnaccountedW}, {"facility_continuity_delta_w", r.FacilityContinuityDeltaW}} {
		if f.v != nil && (math.IsNaN(*f.v) || math.IsInf(*f.v, 0)) {
			return poisonf(ReasonValue, "%s is %v", f.name, *f.v)
		}
	}
	return nil
}

// checkMeter validates a decoded meter report against its subject (the
// measured domain's path and the meter's name), the topology's levels and
// the plausibility bounds (nil: none).
func checkMeter(path []string, meter string, r *telemetry.MeterReport, now time.Time, tw timeWindow, levels []string, bounds *plausible.Bounds) error {
	if r.Meter != meter || !equalStrings(r.Path, path) {
		return poisonf(ReasonLocation, "meter %s at %s does not match its subject (%s at %s)", r.Meter, strings.Join(r.Path, "/"), meter, strings.Join(path, "/"))
	}
	if len(path) > len(levels) {
		return poisonf(ReasonLocation, "meter path %s is deeper than the topology's %d levels", strings.Join(path, "/"), len(levels))
	}
	if want := levels[len(path)-1]; r.Level != want {
		return poisonf(ReasonLocation, "meter %s: level %q, but its path %s is a %s", r.Meter, r.Level, strings.Join(path, "/"), want)
	}
	if err := tw.check(r.WindowEndUnixNs, now); err != nil {
		return err
	}
	if r.Stale && r.PowerW != nil {
		return poisonf(ReasonValue, "stale report with power_w %v (a stale meter has no power)", *r.PowerW)
	}
	for _, f := range [...]struct {
		name string
		v    *float64
	}{{"power_w", r.PowerW}, {"energy_wh", r.EnergyWh}} {
		if f.v != nil && !finiteNonNeg(*f.v) {
			return poisonf(ReasonValue, "%s is %v", f.name, *f.v)
		}
	}
	if r.Seq > math.MaxInt64 {
		return poisonf(ReasonValue, "seq %d exceeds int64", r.Seq)
	}
	if !utf8.ValidString(r.Error) || !utf8.ValidString(r.Poller) {
		return poisonf(ReasonValue, "error or poller is not valid UTF-8")
	}
	if bounds != nil {
		if err := bounds.CheckMeter(r); err != nil {
			return &poison{reason: ReasonImplausible, err: err}
		}
	}
	return nil
}

// checkAlert validates an alert event against its subject.
func checkAlert(severity, rule string, a *telemetry.AlertEvent, now time.Time, tw timeWindow) error {
	if a.Severity != severity || a.Rule != rule {
		return poisonf(ReasonLocation, "alert %s/%s does not match its subject (%s/%s)", a.Severity, a.Rule, severity, rule)
	}
	if err := tw.check(a.AtUnixNs, now); err != nil {
		return err
	}
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"value", a.Value}, {"threshold", a.Threshold}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return poisonf(ReasonValue, "%s is %v", f.name, f.v)
		}
	}
	return nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// parseAlertSubject returns the severity and rule of megawatch.v1.alert.<severity>.<rule>.
func parseAlertSubject(subject string) (severity, rule string, err error) {
	rest, ok := strings.CutPrefix(subject, telemetry.AlertPrefix+".")
	if !ok {
		return "", "", fmt.Errorf("subject %q: not under %s", subject, telemetry.AlertPrefix)
	}
	severity, rule, ok = strings.Cut(rest, ".")
	if !ok || telemetry.ValidateToken(severity) != nil || telemetry.ValidateToken(rule) != nil {
		return "", "", fmt.Errorf("subject %q: want %s.<severity>.<rule>", subject, telemetry.AlertPrefix)
	}
	return severity, rule, nil
}
