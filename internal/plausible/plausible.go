// Package plausible bounds every value of a node report that can reach a
// sum (GPU power, node power, slot power) and the temperatures, so that one
// broken collector (a wrapped uint32, an int64 −1000 read as unsigned, a
// stuck sensor) cannot add gigawatts to a site. Ingest dead-letters an
// implausible report (reason `implausible`) and the aggregator leaves it
// out of every sum; both use the same Bounds.
//
// The bounds are deliberately loose: they catch values no hardware can
// produce, not unusual ones. A GPU's mean, min and max power must stay
// below GPULimitFactor × its enforced power limit (when it reports one)
// and below GPUMaxW; a slot of the node power vector below the sum of its
// GPUs' bounds; the node's own power (field node_power_mw, BMC or hwmon)
// below the GPUs' bounds plus HostAllowanceW, and below NodeMaxW;
// temperatures within [MinTempC, MaxTempC].
package plausible

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// Bounds are the plausibility limits. The zero value is not useful; start
// from Default.
type Bounds struct {
	// GPUMaxW is the absolute ceiling for any GPU power value (mean, min,
	// max, enforced limit). The largest GPUs of 2025 draw 1.2–1.4 kW.
	GPUMaxW float64 `yaml:"gpu_max_w"`
	// GPULimitFactor × the GPU's enforced power limit bounds its power
	// values (instantaneous peaks exceed the limit for milliseconds, a
	// mean never by much). 0 disables the limit-based bound.
	GPULimitFactor float64 `yaml:"gpu_limit_factor"`
	// HostAllowanceW is what a node may draw beside its GPUs (CPUs, memory,
	// NICs, fans, PSU losses): node power ≤ Σ GPU bounds + HostAllowanceW.
	HostAllowanceW float64 `yaml:"host_allowance_w"`
	// NodeMaxW is the absolute ceiling for a node's power (a 2025 8-GPU
	// B200/B300 server is rated about 14.3 kW).
	NodeMaxW float64 `yaml:"node_max_w"`
	// MinTempC and MaxTempC bound GPU and memory temperatures: outside
	// them the sensor is broken (GPUs shut down near 100 °C).
	MinTempC int32 `yaml:"min_temp_c"`
	MaxTempC int32 `yaml:"max_temp_c"`
	// MeterMaxW bounds a facility meter's power (MeterReport.power_w): a
	// campus's main switchgear carries at most a few hundred MW; 2 GW
	// catches a wrong scale (×1000) or word order, never a real reading.
	MeterMaxW float64 `yaml:"meter_max_w"`
}

// Default returns the documented defaults: GPU ≤ 3 kW and ≤ 3× its
// enforced limit, node ≤ its GPUs' bounds + 5 kW and ≤ 40 kW, temperatures
// −40..150 °C. A wrapped uint32 (4,294,967.295 W) or an int64 −1000 read as
// uint32 milliwatts (4,294,966.296 W) is far beyond all of them.
func Default() Bounds {
	return Bounds{GPUMaxW: 3000, GPULimitFactor: 3, HostAllowanceW: 5000, NodeMaxW: 40000, MinTempC: -40, MaxTempC: 150, MeterMaxW: 2e9}
}

// Validate names every bad key under prefix.
func (b Bounds) Validate(prefix string) error {
	var errs []error
	bad := func(key, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, key, fmt.Sprintf(f, a...)))
	}
	if !(b.GPUMaxW > 0) || math.IsInf(b.GPUMaxW, 0) {
		bad("gpu_max_w", "must be positive, got %v", b.GPUMaxW)
	}
	if b.GPULimitFactor != 0 && !(b.GPULimitFactor >= 1) || math.IsInf(b.GPULimitFactor, 0) {
		bad("gpu_limit_factor", "must be 0 (off) or at least 1, got %v", b.GPULimitFactor)
	}
	if !(b.HostAllowanceW >= 0) || math.IsInf(b.HostAllowanceW, 0) {
		bad("host_allowance_w", "must not be negative, got %v", b.HostAllowanceW)
	}
	if !(b.NodeMaxW > 0) || math.IsInf(b.NodeMaxW, 0) {
		bad("node_max_w", "must be positive, got %v", b.NodeMaxW)
	}
	if !(b.MeterMaxW > 0) || math.IsInf(b.MeterMaxW, 0) {
		bad("meter_max_w", "must be positive, got %v", b.MeterMaxW)
	}
	if b.MinTempC >= b.MaxTempC {
		bad("min_temp_c", "must be below max_temp_c (%d), got %d", b.MaxTempC, b.MinTempC)
	}
	return errors.Join(errs...)
}

// Error says which value is implausible and why.
type Error struct {
	Field string  // e.g. "gpus[3].power_mw", "slot_power_w[7]", "node_power_mw"
	Value float64 // in the unit of Bound (W or °C)
	Bound float64
	Why   string // what Bound is
}

func (e *Error) Error() string {
	return e.Field + ": " + strconv.FormatFloat(e.Value, 'f', -1, 64) + " exceeds " + e.Why + " " + strconv.FormatFloat(e.Bound, 'f', -1, 64)
}

// GPUBoundW is the most a GPU with enforced limit limitW (≤ 0: unknown) can
// plausibly draw.
func (b Bounds) GPUBoundW(limitW float64) float64 {
	bound := b.GPUMaxW
	if b.GPULimitFactor > 0 && limitW > 0 {
		bound = min(bound, b.GPULimitFactor*limitW)
	}
	return bound
}

// NodeBoundW is the most a node can draw whose GPUs' bounds sum to gpusW.
func (b Bounds) NodeBoundW(gpusW float64) float64 {
	return min(b.NodeMaxW, gpusW+b.HostAllowanceW)
}

// GPUPower checks one GPU power value against the GPU's bound.
func (b Bounds) GPUPower(field string, powerW, limitW float64) error {
	if bound := b.GPUBoundW(limitW); !(powerW <= bound) {
		return &Error{Field: field, Value: powerW, Bound: bound, Why: b.gpuWhy(limitW)}
	}
	return nil
}

func (b Bounds) gpuWhy(limitW float64) string {
	if b.GPULimitFactor > 0 && limitW > 0 && b.GPULimitFactor*limitW < b.GPUMaxW {
		return "gpu_limit_factor × enforced limit, W"
	}
	return "gpu_max_w, W"
}

// Temp checks a temperature.
func (b Bounds) Temp(field string, c int32) error {
	switch {
	case c > b.MaxTempC:
		return &Error{Field: field, Value: float64(c), Bound: float64(b.MaxTempC), Why: "max_temp_c"}
	case c < b.MinTempC:
		return &Error{Field: field, Value: float64(c), Bound: float64(b.MinTempC), Why: "(below) min_temp_c"}
	}
	return nil
}

// CheckReport returns the first implausible value of r as an *Error, or
// nil. It allocates nothing when r is plausible. GPUs that are not healthy
// are left out of sums downstream and are not checked.
func (b Bounds) CheckReport(r *telemetry.NodeReport) error {
	var gpusW float64
	for i, g := range r.Gpus {
		limitW := -1.0
		if g.PowerLimitMw != nil {
			limitW = mw(*g.PowerLimitMw)
			if limitW > b.GPUMaxW {
				return &Error{Field: gpuField(i, "power_limit_mw"), Value: limitW, Bound: b.GPUMaxW, Why: "gpu_max_w, W"}
			}
		}
		gpusW += b.GPUBoundW(limitW)
		if g.Health != telemetry.Health_HEALTH_OK {
			continue
		}
		for _, f := range [...]struct {
			name string
			v    *uint32
		}{{"power_mw", g.PowerMw}, {"power_min_mw", g.PowerMinMw}, {"power_max_mw", g.PowerMaxMw}} {
			if f.v != nil {
				if err := b.GPUPower("", mw(*f.v), limitW); err != nil {
					err.(*Error).Field = gpuField(i, f.name)
					return err
				}
			}
		}
		if g.TempC != nil {
			if err := b.Temp("", *g.TempC); err != nil {
				err.(*Error).Field = gpuField(i, "temp_c")
				return err
			}
		}
		if g.MemTempC != nil {
			if err := b.Temp("", *g.MemTempC); err != nil {
				err.(*Error).Field = gpuField(i, "mem_temp_c")
				return err
			}
		}
	}
	// Slots are sums of the GPUs' instantaneous power.
	slotBound := min(gpusW, b.NodeMaxW)
	if len(r.Gpus) == 0 {
		slotBound = b.NodeMaxW
	}
	for i, p := range r.SlotPowerW {
		if float64(p) > slotBound {
			return &Error{Field: "slot_power_w[" + strconv.Itoa(i) + "]", Value: float64(p), Bound: slotBound, Why: "the sum of the GPUs' bounds, W"}
		}
	}
	nodeBound := b.NodeBoundW(gpusW)
	if r.NodePowerMw != nil && mw(*r.NodePowerMw) > nodeBound {
		return &Error{Field: "node_power_mw", Value: mw(*r.NodePowerMw), Bound: nodeBound, Why: "the GPUs' bounds + host_allowance_w (at most node_max_w), W"}
	}
	if r.CpuPowerMw != nil && mw(*r.CpuPowerMw) > min(b.HostAllowanceW, b.NodeMaxW) {
		return &Error{Field: "cpu_power_mw", Value: mw(*r.CpuPowerMw), Bound: min(b.HostAllowanceW, b.NodeMaxW), Why: "host_allowance_w, W"}
	}
	return nil
}

func mw(v uint32) float64 { return float64(v) / 1000 }

func gpuField(i int, name string) string { return "gpus[" + strconv.Itoa(i) + "]." + name }
