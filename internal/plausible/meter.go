package plausible

import "github.com/megawatch/megawatch/internal/telemetry"

// CheckMeter returns an *Error when r's power is above MeterMaxW or its
// energy counter above 2^53 Wh (callers reject negative and non-finite
// values first). A stale report (no power) is plausible.
func (b Bounds) CheckMeter(r *telemetry.MeterReport) error {
	if r.PowerW != nil {
		if p := *r.PowerW; !(p <= b.MeterMaxW) {
			return &Error{Field: "power_w", Value: p, Bound: b.MeterMaxW, Why: "meter_max_w, W"}
		}
	}
	if r.EnergyWh != nil {
		if e := *r.EnergyWh; !(e <= maxEnergyWh) {
			return &Error{Field: "energy_wh", Value: e, Bound: maxEnergyWh, Why: "2^53 Wh, the float64 integer range"}
		}
	}
	return nil
}

// maxEnergyWh: a counter beyond 2^53 Wh (9 EWh) is a misread register, and
// loses integer precision as a float.
const maxEnergyWh = 1 << 53
