package collector

import (
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// maxPlausibleW bounds the mean power of one GPU derived from the energy
// counter: a larger value means the counter restarted (driver reload) to a
// value above the last one, and the delta is not a window's energy.
const maxPlausibleW = 20_000

// gpuWindow is what one GPU delivered over one window: the instantaneous
// power samples of its slots and the once-per-window readings taken at the
// window's end. It is the input of summarize, the pure window math.
type gpuWindow struct {
	index       uint32
	uuid, model string // only on inventory reports

	// Slot samples: slotMW[k] is valid when bit k of slotOK is set.
	slotMW [maxSlots]uint32
	slotOK uint32

	throttle     uint64 // clock-event reasons, OR-ed over the slots that read them
	throttleSeen bool

	// Readings at the window end; each is valid when its ok flag is set.
	haveEnd bool // the window-end request returned
	end     endReadings

	health  telemetry.Health
	errText string
	// powerErr is set when a power read failed with something other than
	// NOT_SUPPORTED; with no successful sample it makes the health ERROR.
	powerErr string
}

// energyState follows one GPU's energy counter across windows.
type energyState struct {
	lastMJ uint64
	lastAt time.Time
	have   bool
	epoch  uint32
}

// summarize turns one GPU's window into its wire form and advances its
// energy state. Mean power is ΔmJ/Δms from the energy counter when the
// previous window's reading is there and the counter moved forward by a
// plausible amount; otherwise (first window, counter reset, gap, counter
// unsupported) it is the mean of the instantaneous samples. Fields the GPU
// did not deliver stay nil. A GPU that is not healthy carries only its
// health and error.
func summarize(st *energyState, w *gpuWindow, window time.Duration) *telemetry.Gpu {
	g := &telemetry.Gpu{Index: w.index, Uuid: w.uuid, Model: w.model, Health: w.health, Error: w.errText}
	if w.health == telemetry.Health_HEALTH_OK && w.slotOK == 0 && w.powerErr != "" {
		g.Health, g.Error = telemetry.Health_HEALTH_ERROR, w.powerErr
	}
	if g.Health != telemetry.Health_HEALTH_OK {
		g.EnergyEpoch = st.epoch
		return g
	}

	// One allocation holds every optional value of this GPU.
	v := &gpuValues{throttle: w.throttle}
	var n, sum uint64
	var lo, hi uint32
	for k := range maxSlots {
		if w.slotOK&(1<<k) == 0 {
			continue
		}
		mw := w.slotMW[k]
		if n == 0 || mw < lo {
			lo = mw
		}
		if n == 0 || mw > hi {
			hi = mw
		}
		sum += uint64(mw)
		n++
	}
	if n > 0 {
		v.min, v.max, v.mean = lo, hi, uint32((sum+n/2)/n)
		g.PowerMinMw, g.PowerMaxMw, g.PowerMw = &v.min, &v.max, &v.mean
	}
	if w.haveEnd {
		v.end = w.end
	}
	if v.end.energyOK {
		e := v.end.energyMJ
		g.EnergyMj = &v.end.energyMJ
		switch {
		case !st.have:
			// First reading: no delta yet.
		case e < st.lastMJ:
			st.epoch++ // counter went backwards: driver reload
		default:
			dt := v.end.at.Sub(st.lastAt)
			if dt <= 0 || dt > window+window/2 {
				break // gap (missed windows): the delta is not this window's
			}
			// mJ / ms = W; in mW: ΔmJ * 1000 / Δms = ΔmJ * 1e9 / Δns.
			mw := float64(e-st.lastMJ) * 1e9 / float64(dt.Nanoseconds())
			if mw > maxPlausibleW*1000 {
				st.epoch++ // restarted counter that landed above the old value
				break
			}
			v.mean = uint32(mw + 0.5)
			g.PowerMw = &v.mean
		}
		st.lastMJ, st.lastAt, st.have = e, v.end.at, true
	}
	g.EnergyEpoch = st.epoch
	if v.end.tempOK {
		g.TempC = &v.end.tempC
	}
	if v.end.memOK {
		g.MemTempC = &v.end.memTempC
	}
	if v.end.limitOK {
		g.PowerLimitMw = &v.end.limitMW
	}
	if v.end.smOK {
		g.SmClockMhz = &v.end.smMHz
	}
	if v.end.utilOK {
		g.UtilPct = &v.end.utilPct
	}
	if w.throttleSeen {
		g.ThrottleReasons = &v.throttle
	}
	return g
}

// gpuValues backs the optional fields of one Gpu message.
type gpuValues struct {
	end            endReadings
	throttle       uint64
	min, max, mean uint32
}

// healthyOK reports whether a GPU's slot samples count in node sums.
func (w *gpuWindow) healthyOK() bool {
	return w.health == telemetry.Health_HEALTH_OK
}

// nodeSlots sums the healthy GPUs' samples per slot into watts. A slot with
// no sample from any GPU gets the mean of the other slots and its bit in the
// returned mask.
func nodeSlots(gpus []gpuWindow, slots int, out []uint32) (missing uint32) {
	var sumAll uint64
	var have int
	for k := range slots {
		var mw uint64
		n := 0
		for i := range gpus {
			w := &gpus[i]
			if !w.healthyOK() || w.slotOK&(1<<k) == 0 {
				continue
			}
			mw += uint64(w.slotMW[k])
			n++
		}
		if n == 0 {
			missing |= 1 << k
			out[k] = 0
			continue
		}
		out[k] = uint32((mw + 500) / 1000)
		sumAll += uint64(out[k])
		have++
	}
	if missing != 0 && have > 0 {
		fill := uint32((sumAll + uint64(have)/2) / uint64(have))
		for k := range slots {
			if missing&(1<<k) != 0 {
				out[k] = fill
			}
		}
	}
	return missing
}
