package aggregate

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
)

// runSeries feeds x (slot resolution, 10 slots per window) through one
// domain's analysis as the aggregator does, window by window, and returns
// the last window's state (the spectrum of the last 60 s).
func runSeries(x []float64) DomainState {
	const perWin = 10
	a := newAnalysis(1, 600, 100*time.Millisecond, perWin)
	var d DomainState
	prevMean := 0.0
	for w := 0; w+perWin <= len(x); w += perWin {
		sl := x[w : w+perWin]
		mean := 0.0
		for _, v := range sl {
			mean += v
		}
		mean /= perWin
		d = DomainState{Slots: sl, PowerW: mean, PowerEstW: mean, ContDeltaW: mean - prevMean}
		a.update(0, d.PowerEstW, d.ContDeltaW, d.Slots, w == 0, true, &d.Analysis)
		prevMean = mean
	}
	return d
}

// checkBand is the property every analysis result must have: the dominant
// oscillation is inside the band or absent, its amplitude is >= 0 and
// finite, and the rollup never carries a frequency without a peak.
func checkBand(t *testing.T, d DomainState, what string) {
	t.Helper()
	if !d.HasOsc {
		t.Fatalf("%s: no spectrum after a full window", what)
	}
	if !(d.OscW >= 0) || math.IsInf(d.OscW, 0) {
		t.Fatalf("%s: amplitude %v", what, d.OscW)
	}
	if d.OscFound && !(d.OscFreqHz >= OscMinHz && d.OscFreqHz <= OscMaxHz) {
		t.Fatalf("%s: frequency %v Hz outside the band [%v, %v]", what, d.OscFreqHz, OscMinHz, OscMaxHz)
	}
	if !d.OscFound && (d.OscFreqHz != 0 || d.OscW != 0) {
		t.Fatalf("%s: no peak but %v Hz %v W", what, d.OscFreqHz, d.OscW)
	}
	for _, band := range [][2]float64{{0.2, 3}, {0.1, 0.5}, {1, 1.02}, {4, 5}} {
		f, pp, ok := d.Band(band[0], band[1])
		if !ok || !(pp >= 0) || (pp > 0 && !(f >= band[0] && f <= band[1])) || (pp == 0 && f != 0) {
			t.Fatalf("%s: Band(%v) = %v Hz, %v W, %v", what, band, f, pp, ok)
		}
	}
}

// Random series of every kind (noise, steps, ramps, spikes, a rising or
// falling spectrum across the band, sines out of band) never give a
// frequency outside the band or a negative amplitude.
func TestOscillationStaysInBandOnRandomSeries(t *testing.T) {
	for seed := range uint64(300) {
		x := randomSeries(rand.New(rand.NewPCG(seed, 9)))
		checkBand(t, runSeries(x), "seed "+itoa(int(seed)))
	}
}

// A sine of amplitude A at f inside the band, over an offset, a ramp and
// noise, is found within one bin of f and within ±10 % of A.
func TestOscillationFindsKnownSine(t *testing.T) {
	const binHz = 1.0 / 60
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 3))
		f := OscMinHz + 2*binHz + r.Float64()*(4.5-OscMinHz-2*binHz)
		A := 1e3 + r.Float64()*5e6
		x := make([]float64, 900)
		phase := r.Float64() * 2 * math.Pi
		base, slope := r.Float64()*1e8, (r.Float64()-0.5)*A/100
		for i := range x {
			ts := float64(i) * 0.1
			x[i] = base + slope*ts + A*math.Sin(2*math.Pi*f*ts+phase) + 0.01*A*r.NormFloat64()
		}
		d := runSeries(x)
		checkBand(t, d, "sine")
		if !d.OscFound || math.Abs(d.OscFreqHz-f) > binHz {
			t.Fatalf("seed %d: sine at %.4f Hz found at %.4f Hz (found %v), want within one bin (%.4f Hz)", seed, f, d.OscFreqHz, d.OscFound, binHz)
		}
		if got := d.OscW / 2; got < 0.9*A || got > 1.1*A {
			t.Fatalf("seed %d: sine of amplitude %.0f at %.3f Hz measured %.0f (%.1f%%)", seed, A, f, got, 100*got/A)
		}
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

// randomSeries draws one of several shapes that used to push the refined
// peak out of the band (below 0.1 Hz or negative).
func randomSeries(r *rand.Rand) []float64 {
	x := make([]float64, 600+10*r.IntN(60))
	scale := math.Pow(10, r.Float64()*8)
	kind := r.IntN(7)
	for i := range x {
		ts := float64(i) * 0.1
		switch kind {
		case 0: // white noise
			x[i] = scale * r.Float64()
		case 1: // random walk (spectrum falling across the band)
			if i > 0 {
				x[i] = x[i-1] + scale*r.NormFloat64()
			}
		case 2: // steps
			if i > 0 {
				x[i] = x[i-1]
				if r.IntN(50) == 0 {
					x[i] += scale * r.NormFloat64()
				}
			}
		case 3: // a sine just below the band
			x[i] = scale * math.Sin(2*math.Pi*0.03*ts)
		case 4: // a sine above the band (aliased near Nyquist)
			x[i] = scale * math.Sin(2*math.Pi*4.99*ts)
		case 5: // spikes
			if r.IntN(100) == 0 {
				x[i] = scale
			}
		case 6: // constant
			x[i] = scale
		}
		x[i] = max(0, x[i]+scale)
	}
	return x
}

// FuzzOscillationBand runs arbitrary series (8 bytes per slot) through the
// analysis: the result always satisfies the band property.
func FuzzOscillationBand(f *testing.F) {
	seed := make([]byte, 8*600)
	for i := range 600 {
		binary.LittleEndian.PutUint64(seed[8*i:], math.Float64bits(1e6+1e5*math.Sin(float64(i)/3)))
	}
	f.Add(seed)
	f.Add(make([]byte, 8*600))
	f.Fuzz(func(t *testing.T, b []byte) {
		x := make([]float64, 0, 900)
		for len(b) >= 8 && len(x) < 900 {
			v := math.Float64frombits(binary.LittleEndian.Uint64(b))
			b = b[8:]
			if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e13 {
				v = 0
			}
			x = append(x, v)
		}
		for len(x) < 600 {
			x = append(x, 0)
		}
		checkBand(t, runSeries(x), "fuzz")
	})
}

// A flat-loaded site: 20 % of its nodes fall silent (past stale_after),
// then rejoin; a node that was never heard joins mid-run. None of it is a
// ramp, swing or oscillation; a real load step on reporting nodes is.
func TestCoverageChangesAreNoRamp(t *testing.T) {
	topo := bigTopo(t, 2, 2, 5) // 360 nodes
	steady := sim.Job{Name: "steady", Duty: 1, Period: 2 * time.Second, ComputeFrac: 0.8, CommFrac: 0.8}
	f := newFleet(t, topo, steady)
	a, err := New(testConfig(), topo)
	if err != nil {
		t.Fatal(err)
	}
	site := topo.Sites()[0].ID
	late := len(topo.Nodes()) - 1 // never heard until window 40
	var maxRamp, maxSwing, power float64
	for w := 1; w <= 120; w++ {
		end := testEpoch.Add(time.Duration(w) * time.Second)
		skip := func(i int) bool {
			if i == late && w < 40 {
				return true
			}
			return w >= 30 && w < 70 && i%5 == 0 // 20 % leave for 40 s
		}
		feed(t, a, reports(t, topo, f, end, skip))
		st := a.Tick(end)[site]
		power = st.PowerEstW
		if w == 50 && !(st.Coverage < 0.81) {
			t.Fatalf("window 50: coverage %v, want the 20 %% gone", st.Coverage)
		}
		if st.HasAnalysis && w > 5 {
			maxRamp, maxSwing = max(maxRamp, st.RampWPerS), max(maxSwing, st.SwingW)
		}
		if st.HasOsc && st.OscW > 0.01*power {
			t.Errorf("window %d: oscillation %.0f W at %.2f Hz from coverage changes", w, st.OscW, st.OscFreqHz)
		}
	}
	if maxRamp > 0.01*power || maxSwing > 0.02*power {
		t.Errorf("ramp %.0f W/s, swing %.0f W on a flat %.0f W site whose nodes left and rejoined: want ≈ 0", maxRamp, maxSwing, power)
	}
	// The same site with a real step (the job stops on every node): a ramp.
	stop := steady
	stop.Stop = 125 * time.Second
	f2 := newFleet(t, topo, stop)
	a2, _ := New(testConfig(), topo)
	var ramp float64
	for w := 100; w <= 135; w++ {
		end := testEpoch.Add(time.Duration(w) * time.Second)
		feed(t, a2, reports(t, topo, f2, end, nil))
		if st := a2.Tick(end)[site]; st.HasAnalysis {
			ramp = max(ramp, st.RampWPerS)
		}
	}
	if ramp < 0.2*power {
		t.Errorf("a job stop on every node: ramp %.0f W/s of a %.0f W site, want a large step", ramp, power)
	}
}
