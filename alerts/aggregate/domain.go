package aggregate

import (
	"math"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// DomainState is one domain's figures for one window. Watts.
type DomainState struct {
	ID             int
	WindowEnd      time.Time
	PowerW         float64 // reporting nodes (fresh, or held within stale_after)
	PowerEstW      float64 // PowerW + last known power of the missing nodes
	MissingEstW    float64 // last known power of the missing nodes
	PowerMaxW      float64 // max over slots of the summed slot power
	PowerMaxEstW   float64 // PowerMaxW + last known power of the missing nodes
	Slots          []float64
	CapacityW      float64
	HeadroomW      float64 // CapacityW - PowerEstW
	NodesReporting int     // fresh + held
	NodesHeld      int     // counted with their last power (silent for ≤ stale_after windows)
	NodesExpected  int
	StaleNodes     int     // expected nodes not counted
	Coverage       float64 // NodesReporting / NodesExpected
	// Degraded: coverage below MinCoverage. The figures are partly
	// estimated. (Reports are never dropped by the aggregator itself: a
	// slow one is late, see alerts' input.)
	Degraded bool
	// ContDeltaW is the change of the mean power since the previous window
	// of the nodes that reported in both (coverage-proof).
	ContDeltaW    float64
	GPUTempMaxC   int32 // noTemp (math.MinInt32) when none reported
	MemTempMaxC   int32
	ThrottledGPUs int
	GPUs          int
	GPUsHealthy   int
	// Analysis of GPU power over the sliding window, on the continuity
	// series: its level moves only by ContDeltaW, so nodes falling silent
	// or coming back are no ramp, swing or oscillation; its shape within a
	// window is that of the summed slots.
	Analysis

	// Facility power (docs/facility.md): the megawatts the breakers carry.
	NodePowerW         float64 // node power of the reporting nodes (measured, or modeled: see NodePowerModeledW)
	NodeMissingEstW    float64 // last known node power of the missing nodes
	NodePowerEstW      float64 // NodePowerW + NodeMissingEstW
	NodePowerModeledW  float64 // the part of NodePowerW estimated by a model (collector's or node_model)
	NodesPowerMeasured int     // reporting nodes with measured node power (BMC, hwmon)
	NodeContDeltaW     float64 // coverage-proof change of node power (nodes reporting in both windows)
	CPUPowerW          float64 // sum of the CPU power (RAPL) of the nodes that sent it
	HasCPUPower        bool
	// Meters: MeteredW is the sum of the fresh (or held) meters covering
	// the domain — its own meters, or else its children's when every child
	// is metered; valid only when HasMetered. Meters counts the meters of
	// the subtree (in scope), MetersStale those without a fresh or held
	// reading this window.
	MeteredW    float64
	HasMetered  bool
	Meters      int
	MetersStale int
	// FacilityW is MeteredW when HasMetered, else NodePowerEstW;
	// FacilityMaxW the max slot of the 10 Hz facility estimate (Slots
	// shifted by FacilityW - mean(Slots)); UnaccountedW = MeteredW -
	// NodePowerW (valid when HasMetered); FacilityHeadroomW = CapacityW -
	// FacilityW.
	FacilityW         float64
	FacilityMaxW      float64
	UnaccountedW      float64
	FacilityHeadroomW float64
	// FacilityDegraded: the topology meters the domain (its own meters, or
	// every child metered) but stale meters leave it unmetered this
	// window, or FacilityW is from node power with coverage below
	// MinCoverage. Firing facility alerts then do not resolve.
	FacilityDegraded   bool
	FacilityContDeltaW float64
	// Facility is the analysis of the 10 Hz facility estimate, on a
	// continuity series that moves by FacilityContDeltaW.
	Facility Analysis
}

// Analysis is ramp, swing and dominant oscillation over the sliding
// analysis window. HasAnalysis once 1 s of history exists; HasOsc once
// the window is full.
type Analysis struct {
	HasAnalysis bool
	RampWPerS   float64
	SwingW      float64
	HasOsc      bool
	OscFound    bool // a peak inside the band (else OscFreqHz and OscW are 0)
	OscFreqHz   float64
	OscW        float64   // peak-to-peak of the dominant oscillation in 0.1–5 Hz
	Spectrum    []float64 // peak-to-peak W per frequency bin (bin i = i*BinHz); valid until the next Tick
	BinHz       float64
}

// HasGPUTemp reports whether a GPU temperature was reported.
func (d *DomainState) HasGPUTemp() bool { return d.GPUTempMaxC != noTemp }

// HasMemTemp reports whether a memory temperature was reported.
func (d *DomainState) HasMemTemp() bool { return d.MemTempMaxC != noTemp }

// add sums child c into d (the raw accumulators).
func (d *DomainState) add(c *DomainState) {
	d.PowerW += c.PowerW
	d.MissingEstW += c.MissingEstW
	d.ContDeltaW += c.ContDeltaW
	d.NodesReporting += c.NodesReporting
	d.NodesHeld += c.NodesHeld
	d.StaleNodes += c.StaleNodes
	d.GPUTempMaxC = max(d.GPUTempMaxC, c.GPUTempMaxC)
	d.MemTempMaxC = max(d.MemTempMaxC, c.MemTempMaxC)
	d.ThrottledGPUs += c.ThrottledGPUs
	d.GPUs += c.GPUs
	d.GPUsHealthy += c.GPUsHealthy
	d.NodePowerW += c.NodePowerW
	d.NodeMissingEstW += c.NodeMissingEstW
	d.NodePowerModeledW += c.NodePowerModeledW
	d.NodesPowerMeasured += c.NodesPowerMeasured
	d.NodeContDeltaW += c.NodeContDeltaW
	d.CPUPowerW += c.CPUPowerW
	d.HasCPUPower = d.HasCPUPower || c.HasCPUPower
	d.Meters += c.Meters
	d.MetersStale += c.MetersStale
}

// Band returns the dominant oscillation between lo and hi Hz: frequency
// and peak-to-peak W; ok is false without a full analysis window. The
// dominant oscillation is the largest local maximum of the spectrum inside
// the band; without one (the spectrum only rises or falls across the band)
// there is none: 0, 0, true. The frequency is refined within half a bin of
// that peak and never leaves [lo, hi]; the amplitude is corrected for the
// Hann window's scalloping.
func (d *Analysis) Band(lo, hi float64) (freqHz, ppW float64, ok bool) {
	if !d.HasOsc || d.BinHz <= 0 || !(lo <= hi) {
		return 0, 0, false
	}
	s := d.Spectrum
	best := -1
	first := max(1, int(math.Ceil(lo/d.BinHz-1e-9)))
	for i := first; i < len(s) && float64(i)*d.BinHz <= hi+1e-9; i++ {
		if !(s[i] > 0) || (i > 0 && s[i-1] > s[i]) || (i+1 < len(s) && s[i+1] > s[i]) {
			continue // not a peak
		}
		if best < 0 || s[i] > s[best] {
			best = i
		}
	}
	if best < 0 {
		return 0, 0, true
	}
	delta, pp := refine(s, best)
	f := (float64(best) + delta) * d.BinHz
	return min(hi, max(lo, f)), pp, true
}

// refine estimates a Hann-windowed tone's offset from peak bin k (within
// ±0.5 bin) from the larger neighbour's ratio, and its peak-to-peak
// amplitude from the window's response at that offset.
func refine(s []float64, k int) (delta, pp float64) {
	b := s[k]
	var left, right float64
	if k > 0 {
		left = s[k-1]
	}
	if k+1 < len(s) {
		right = s[k+1]
	}
	sign, n := 1.0, right
	if left > right {
		sign, n = -1, left
	}
	alpha := n / b // 0..1: b is a peak
	delta = min(0.5, max(0, (2*alpha-1)/(alpha+1)))
	return sign * delta, b / hannResponse(delta)
}

// hannResponse is the Hann window's normalised amplitude response at x bins
// from a tone (1 at 0, 0.85 at 0.5): sinc(x) / (1 - x²).
func hannResponse(x float64) float64 {
	if x == 0 {
		return 1
	}
	px := math.Pi * x
	return math.Sin(px) / px / (1 - x*x)
}

// Fill writes the rollup of d (domain dom) into r, reusing its slices.
func (d *DomainState) Fill(dom *topology.Domain, window, slot time.Duration, seq uint64, r *telemetry.Rollup) {
	slots := r.SlotPowerW[:0]
	slots = append(slots, d.Slots...)
	*r = telemetry.Rollup{
		Level: dom.Level, Path: dom.Path, WindowEndUnixNs: d.WindowEnd.UnixNano(),
		WindowMs: uint32(window.Milliseconds()), SlotMs: uint32(slot.Milliseconds()),
		PowerW: d.PowerW, PowerEstW: d.PowerEstW, PowerMaxW: d.PowerMaxW, SlotPowerW: slots,
		CapacityW: d.CapacityW, NodesReporting: uint32(d.NodesReporting), NodesExpected: uint32(d.NodesExpected),
		StaleNodes: uint32(d.StaleNodes), ThrottledGpus: uint32(d.ThrottledGPUs), Gpus: uint32(d.GPUs),
		GpusHealthy: uint32(d.GPUsHealthy), Seq: seq,
		Degraded: d.Degraded, PowerMaxEstW: d.PowerMaxEstW, Coverage: d.Coverage,
	}
	r.ContinuityDeltaW = &d.ContDeltaW
	if d.HasAnalysis {
		r.RampWPerS, r.SwingW = &d.RampWPerS, &d.SwingW
	}
	if d.HasOsc {
		r.OscW = &d.OscW
		if d.OscFound {
			r.OscFreqHz = &d.OscFreqHz
		}
	}
	if d.HasGPUTemp() {
		r.GpuTempMaxC = &d.GPUTempMaxC
	}
	if d.HasMemTemp() {
		r.MemTempMaxC = &d.MemTempMaxC
	}
	r.NodePowerW, r.NodePowerEstW, r.NodePowerModeledW = d.NodePowerW, d.NodePowerEstW, d.NodePowerModeledW
	r.NodesPowerMeasured = uint32(d.NodesPowerMeasured)
	r.Meters, r.MetersStale = uint32(d.Meters), uint32(d.MetersStale)
	r.FacilitySource = telemetry.FacilitySource_FACILITY_SOURCE_NODE
	if d.HasMetered {
		r.FacilitySource = telemetry.FacilitySource_FACILITY_SOURCE_METER
		r.MeteredW, r.UnaccountedW = &d.MeteredW, &d.UnaccountedW
	}
	r.FacilityPowerW, r.FacilityPowerMaxW = d.FacilityW, d.FacilityMaxW
	if d.Facility.HasAnalysis {
		r.FacilityRampWPerS, r.FacilitySwingW = &d.Facility.RampWPerS, &d.Facility.SwingW
	}
	if d.Facility.HasOsc {
		r.FacilityOscW = &d.Facility.OscW
		if d.Facility.OscFound {
			r.FacilityOscFreqHz = &d.Facility.OscFreqHz
		}
	}
	r.FacilityContinuityDeltaW = &d.FacilityContDeltaW
	r.FacilityDegraded = d.FacilityDegraded
	if d.HasCPUPower {
		r.CpuPowerW = &d.CPUPowerW
	}
}
