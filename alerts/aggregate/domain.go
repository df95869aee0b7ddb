package aggregate

import (
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
	Slots          []float64
	CapacityW      float64
	HeadroomW      float64
	NodesReporting int // fresh + held
	NodesHeld      int // counted with their last power (silent for ≤ stale_after windows)
	NodesExpected  int
	StaleNodes     int // expected nodes not counted
	Coverage       float64
	GPUTempMaxC    int32 // noTemp (math.MinInt32) when none reported
	MemTempMaxC    int32
	ThrottledGPUs  int
	GPUs           int
	GPUsHealthy    int
	// Analysis over the sliding window, on the estimate series (missing
	// nodes filled with their last power, so a node falling silent is not
	// a ramp). HasAnalysis once 1 s of history exists; HasOsc once the
	// window is full.
	HasAnalysis bool
	RampWPerS   float64
	SwingW      float64
	HasOsc      bool
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
	d.NodesReporting += c.NodesReporting
	d.NodesHeld += c.NodesHeld
	d.StaleNodes += c.StaleNodes
	d.GPUTempMaxC = max(d.GPUTempMaxC, c.GPUTempMaxC)
	d.MemTempMaxC = max(d.MemTempMaxC, c.MemTempMaxC)
	d.ThrottledGPUs += c.ThrottledGPUs
	d.GPUs += c.GPUs
	d.GPUsHealthy += c.GPUsHealthy
}

// Band returns the dominant oscillation between lo and hi Hz: frequency
// and peak-to-peak W; ok is false without a full analysis window.
func (d *DomainState) Band(lo, hi float64) (freqHz, ppW float64, ok bool) {
	if !d.HasOsc || d.BinHz <= 0 {
		return 0, 0, false
	}
	best := -1
	for i := max(1, int(lo/d.BinHz)); i < len(d.Spectrum) && float64(i)*d.BinHz <= hi; i++ {
		if float64(i)*d.BinHz < lo {
			continue
		}
		if best < 0 || d.Spectrum[i] > d.Spectrum[best] {
			best = i
		}
	}
	if best < 0 {
		return 0, 0, true
	}
	return refine(d.Spectrum, best) * d.BinHz, d.Spectrum[best], true
}

// refine interpolates the peak position around bin k (parabola through the
// three magnitudes).
func refine(s []float64, k int) float64 {
	if k <= 0 || k >= len(s)-1 {
		return float64(k)
	}
	a, b, c := s[k-1], s[k], s[k+1]
	den := a - 2*b + c
	if den == 0 {
		return float64(k)
	}
	return float64(k) + 0.5*(a-c)/den
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
	}
	if d.HasAnalysis {
		r.RampWPerS, r.SwingW = &d.RampWPerS, &d.SwingW
	}
	if d.HasOsc {
		r.OscFreqHz, r.OscW = &d.OscFreqHz, &d.OscW
	}
	if d.HasGPUTemp() {
		r.GpuTempMaxC = &d.GPUTempMaxC
	}
	if d.HasMemTemp() {
		r.MemTempMaxC = &d.MemTempMaxC
	}
}
