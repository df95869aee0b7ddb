package aggregate

import (
	"math"
	"time"

	"gonum.org/v1/gonum/dsp/fourier"
)

// Oscillation search band of the rollup's osc_freq_hz / osc_w.
const (
	OscMinHz = 0.1
	OscMaxHz = 5.0
)

// analysis keeps each domain's estimate series at slot resolution over the
// analysis window and derives ramp, swing and the amplitude spectrum.
type analysis struct {
	n      int // samples in the window
	perSec int // samples per second (ramp span)
	slot   time.Duration
	hist   []float64 // [id*n + i] ring
	pos    []int32   // next write index per domain
	level  []float64 // continuity level per domain: moves by ContDeltaW only
	off    []float64 // PowerEstW - level at the last update (to plot the series)
	filled []int32   // samples held per domain
	spec   []float64 // [id*(n/2+1) + k] peak-to-peak W per bin
	binHz  float64
	fft    *fourier.FFT
	win    []float64 // Hann window
	winSum float64
	buf    []float64
	coef   []complex128
}

func newAnalysis(domains, n int, slot time.Duration, _ int) *analysis {
	a := &analysis{n: n, perSec: int(time.Second / slot), slot: slot,
		hist: make([]float64, domains*n), pos: make([]int32, domains),
		level: make([]float64, domains), off: make([]float64, domains), filled: make([]int32, domains),
		spec: make([]float64, domains*(n/2+1)), binHz: 1 / (float64(n) * slot.Seconds()),
		fft: fourier.NewFFT(n), win: make([]float64, n), buf: make([]float64, n), coef: make([]complex128, n/2+1)}
	for i := range a.win {
		a.win[i] = 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(n))
		a.winSum += a.win[i]
	}
	if a.perSec < 1 {
		a.perSec = 1
	}
	return a
}

// history copies domain id's series, oldest first, into dst.
func (a *analysis) history(id int, dst []float64) []float64 {
	f, p := int(a.filled[id]), int(a.pos[id])
	h := a.hist[id*a.n : id*a.n+a.n]
	dst = dst[:0]
	if f <= p {
		return append(dst, h[p-f:p]...)
	}
	dst = append(dst, h[a.n-(f-p):]...)
	return append(dst, h[:p]...)
}

// update appends the window's continuity series (level from est, moved by
// delta; shape of slots) and fills d. gap resets the history (windows were skipped); osc says
// whether to compute the spectrum.
//
// The continuity series is level + (slot - mean of the window's slots):
// the level starts at the estimate and then moves only by delta (ContDeltaW
// for GPU power), the change of the nodes that reported in both windows. Nodes dropping out or
// coming back change PowerW and the estimate but never the series, so they
// are no ramp, swing or oscillation; a load change on reporting nodes is.
func (a *analysis) update(id int, est, delta float64, slots []float64, gap, osc bool, d *Analysis) {
	if gap {
		a.filled[id], a.pos[id] = 0, 0
		a.level[id] = est
	} else {
		a.level[id] += delta
	}
	a.off[id] = est - a.level[id]
	mean := 0.0
	for _, v := range slots {
		mean += v
	}
	if len(slots) > 0 {
		mean /= float64(len(slots))
	}
	base := a.level[id] - mean
	h := a.hist[id*a.n : id*a.n+a.n]
	p := int(a.pos[id])
	for _, v := range slots {
		h[p] = base + v
		p++
		if p == a.n {
			p = 0
		}
	}
	a.pos[id] = int32(p)
	a.filled[id] = int32(min(a.n, int(a.filled[id])+len(slots)))
	d.HasAnalysis, d.HasOsc = false, false
	f := int(a.filled[id])
	if f <= a.perSec {
		return
	}
	lo, hi, ramp := a.rampSwing(h, p, f)
	d.HasAnalysis = true
	d.SwingW = hi - lo
	d.RampWPerS = ramp * float64(time.Second) / float64(time.Duration(a.perSec)*a.slot)
	if f < a.n || !osc {
		return
	}
	x := a.history(id, a.buf)
	detrend(x, a.win)
	c := a.fft.Coefficients(a.coef, x)
	spec := a.spec[id*len(c) : id*len(c)+len(c)]
	// |X_k| * 2 / sum(w) is the sinusoid's amplitude; peak-to-peak is twice that.
	scale := 4 / a.winSum
	for k, v := range c {
		spec[k] = math.Sqrt(real(v)*real(v)+imag(v)*imag(v)) * scale
	}
	spec[0] = 0
	d.HasOsc, d.Spectrum, d.BinHz = true, spec, a.binHz
	d.OscFreqHz, d.OscW, _ = d.Band(OscMinHz, OscMaxHz)
	d.OscFound = d.OscW > 0
}

// rampSwing is the min, max and largest change over perSec samples of the
// f samples of ring h that end before p, read in place (no copy: most
// domains need no spectrum).
func (a *analysis) rampSwing(h []float64, p, f int) (lo, hi, ramp float64) {
	n := len(h)
	i := p - f
	if i < 0 {
		i += n
	}
	j := i + a.perSec
	if j >= n {
		j -= n
	}
	lo, hi = h[i], h[i]
	for c := f - a.perSec; c > 0; c-- {
		v := h[i]
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
		dv := h[j] - v
		if dv < 0 {
			dv = -dv
		}
		if dv > ramp {
			ramp = dv
		}
		if i++; i == n {
			i = 0
		}
		if j++; j == n {
			j = 0
		}
	}
	for c := a.perSec; c > 0; c-- {
		if v := h[i]; v < lo {
			lo = v
		} else if v > hi {
			hi = v
		}
		if i++; i == n {
			i = 0
		}
	}
	return lo, hi, ramp
}

// plotHistory is history shifted to the current estimate's level.
func (a *analysis) plotHistory(id int, dst []float64) []float64 {
	dst = a.history(id, dst)
	for i := range dst {
		dst[i] += a.off[id]
	}
	return dst
}

// detrend removes the least-squares line, so that a ramp does not show up
// as low-frequency oscillation, and applies the window w.
func detrend(x, w []float64) {
	n := float64(len(x))
	var sx, sy, sxx, sxy float64
	for i, v := range x {
		t := float64(i)
		sx += t
		sy += v
		sxx += t * t
		sxy += t * v
	}
	den := n*sxx - sx*sx
	b := 0.0
	if den != 0 {
		b = (n*sxy - sx*sy) / den
	}
	a := (sy - b*sx) / n
	w = w[:len(x)]
	for i := range x {
		x[i] = (x[i] - a - b*float64(i)) * w[i]
	}
}
