package telemetry

// Unit helpers. Internal math is in watts (float64); the wire carries NVML's
// integer units. See telemetry.proto.

// MilliwattsToW converts NVML milliwatts to watts.
func MilliwattsToW(mw uint32) float64 { return float64(mw) / 1000 }

// WToMilliwatts converts watts to milliwatts, clamped to the uint32 range.
func WToMilliwatts(w float64) uint32 {
	switch {
	case !(w > 0): // also NaN
		return 0
	case w*1000 >= 4294967295:
		return 4294967295
	}
	return uint32(w*1000 + 0.5)
}

// WToMW converts watts to megawatts.
func WToMW(w float64) float64 { return w / 1e6 }
