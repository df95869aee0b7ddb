package sim

import (
	"math"
	"sync"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
)

const (
	maxSlots     = 64                          // slot vector cap per window
	maxCatchUpNs = int64(10 * time.Minute)     // longer gaps are skipped, not integrated
	lostError    = "ERROR_GPU_IS_LOST"         // Gpu.error of a lost GPU
	hangError    = "nvml call timed out (sim)" // Gpu.error of a hung GPU
)

// Fleet computes whole NodeReports for many nodes straight from the model,
// without the NVML layer: for `megawatch loadgen` and the demo. Different
// nodes may be reported concurrently; calls for one node are serialised.
type Fleet struct {
	p     *params
	nodes []fleetNode
}

type fleetNode struct {
	mu   sync.Mutex
	n    *node
	init bool
	st   [gpusPerNode]gpuState
	seq  uint64
	last [4]winPower // recent windows, for NodePowerW
	next int
}

type winPower struct {
	endNs, windowNs int64
	w               float64
	ok              bool
}

// NewFleet builds the model of every node.
func NewFleet(cfg Config, nodes []telemetry.Location) (*Fleet, error) {
	p, err := newParams(cfg)
	if err != nil {
		return nil, err
	}
	f := &Fleet{p: p, nodes: make([]fleetNode, len(nodes))}
	for i, loc := range nodes {
		f.nodes[i].n = newNode(p, loc)
	}
	return f, nil
}

// Len is the number of nodes.
func (f *Fleet) Len() int { return len(f.nodes) }

// winAcc is one report's accumulators.
type winAcc struct {
	startNs, endNs   int64
	slotNs           int64
	nSlots, nextSlot int
	healthy          [gpusPerNode]bool
	energy           [gpusPerNode]float64
	reasons          [gpusPerNode]uint64
	minW, maxW, sumW [gpusPerNode]float64
	slotW            [maxSlots]float64
	noInstant        [gpusPerNode]bool
}

// run integrates all GPUs of fn from their step to step to, sampling slot
// instants into w when it is not nil.
func (fn *fleetNode) run(st *[gpusPerNode]gpuState, to int64, w *winAcc) {
	n := fn.n
	for k := st[0].step; k < to; k++ {
		if w != nil {
			for w.nextSlot < w.nSlots {
				ts := w.startNs + int64(w.nextSlot)*w.slotNs + w.slotNs/2
				if ts >= (k+1)*stepNs {
					break
				}
				dw, act, _ := n.demand(ts)
				for g := range st {
					p, _ := n.power(g, ts, dw, act, st[g].tempC)
					w.sumW[g] += p
					w.minW[g] = min(w.minW[g], p)
					w.maxW[g] = max(w.maxW[g], p)
					if w.healthy[g] && !w.noInstant[g] {
						w.slotW[w.nextSlot] += p
					}
				}
				w.nextSlot++
			}
		}
		dw, act, _ := n.demand(k*stepNs + stepNs/2)
		for g := range st {
			e, r := n.stepGPU(&st[g], g, dw, act)
			if w != nil {
				w.energy[g] += e
				w.reasons[g] |= r
			}
		}
	}
}

// reach brings st to step, initialising it there when it is behind by more
// than maxCatchUpNs or ahead (time went back).
func (fn *fleetNode) reach(st *[gpusPerNode]gpuState, initDone bool, step int64) {
	n := fn.n
	switch {
	case !initDone:
		for g := range st {
			n.initState(&st[g], g, step*stepNs)
		}
	case st[0].step > step: // time went back: start again there, counters kept
		for g := range st {
			e, ep := st[g].energyMJ, st[g].epoch
			n.initState(&st[g], g, step*stepNs)
			st[g].energyMJ, st[g].epoch = e, ep
		}
	case (step-st[0].step)*stepNs > maxCatchUpNs:
		for g := range st {
			n.skipState(&st[g], g, step)
		}
	default:
		fn.run(st, step, nil)
	}
}

// health evaluates lost and hang faults at the end of the window.
func (n *node) health(g int, s int64) telemetry.Health {
	for i := range n.faults {
		f := &n.faults[i]
		if !f.active(g, s) {
			continue
		}
		switch f.kind {
		case FaultLost:
			return telemetry.Health_HEALTH_LOST
		case FaultHang:
			return telemetry.Health_HEALTH_TIMEOUT
		}
	}
	return telemetry.Health_HEALTH_OK
}

func (n *node) supported(g int, fd field, s int64) bool {
	return len(n.faults) == 0 || n.faultAt(FaultNotSupported, g, fd, s) == nil
}

// simulate runs the window (windowEnd-window, windowEnd] on st.
func (fn *fleetNode) simulate(st *[gpusPerNode]gpuState, initDone bool, w *winAcc) {
	n := fn.n
	last := w.endNs - 1
	for g := range gpusPerNode {
		w.healthy[g] = n.health(g, last) == telemetry.Health_HEALTH_OK
		w.noInstant[g] = !n.supported(g, fPowerInstant, last)
		w.minW[g], w.maxW[g] = math.Inf(1), math.Inf(-1)
	}
	startStep, endStep := floorDiv(w.startNs, stepNs), floorDiv(w.endNs, stepNs)
	fn.reach(st, initDone, startStep)
	fn.run(st, endStep, w)
}

// Report fills dst (reset first; reuse it to avoid allocations) with node
// i's report for the window (windowEnd-window, windowEnd]: slot_power_w per
// slot (instants at slot midpoints), per-GPU mean power from the energy
// delta, min/max of the slot instants, the energy counter, temperatures,
// limit, clock, utilisation, throttle reasons OR-ed over the window, health
// (lost and hang faults at the window end), seq (+1 per call for that node),
// uuid/model on the first report and every 60th. Version, boot_id and
// replayed are left for the caller. Windows should advance: a window before
// the previous one restarts the node's state there (its energy counters
// pause), and a gap over 10 minutes is skipped rather than integrated.
func (f *Fleet) Report(dst *telemetry.NodeReport, i int, windowEnd time.Time, window, slot time.Duration) {
	fn := &f.nodes[i]
	n := fn.n
	if window < time.Duration(stepNs) {
		window = time.Second
	}
	if slot <= 0 || slot > window {
		slot = window
	}
	if window/slot > maxSlots {
		slot = (window + maxSlots - 1) / maxSlots
	}
	nSlots := int(window / slot)
	var w winAcc
	w.endNs = n.p.scenarioNs(windowEnd)
	w.startNs = w.endNs - int64(window)
	w.slotNs, w.nSlots = int64(slot), nSlots

	fn.mu.Lock()
	fn.simulate(&fn.st, fn.init, &w)
	fn.init = true
	fn.seq++
	seq := fn.seq
	st := fn.st
	fn.mu.Unlock()

	resetReport(dst)
	loc := n.loc
	dst.Site, dst.Hall, dst.Row, dst.Rack, dst.Node = loc.Site, loc.Hall, loc.Row, loc.Rack, loc.Node
	dst.WindowEndUnixNs = windowEnd.UnixNano()
	dst.WindowMs = uint32(window / time.Millisecond)
	dst.SlotMs = uint32(slot / time.Millisecond)
	dst.Seq = seq

	secs := float64(floorDiv(w.endNs, stepNs)-floorDiv(w.startNs, stepNs)) * stepS
	last := w.endNs - 1
	inventory := (seq-1)%60 == 0
	nodeW := 0.0
	healthy := 0
	for g := range gpusPerNode {
		gpu := dst.Gpus[g]
		gpu.Index = uint32(g)
		if inventory {
			gpu.Uuid = gpuUUID(n.hash, g)
			gpu.Model = n.p.spec.name
		}
		gpu.EnergyEpoch = st[g].epoch
		gpu.Health = n.health(g, last)
		if gpu.Health != telemetry.Health_HEALTH_OK {
			clearOptional(gpu)
			if gpu.Health == telemetry.Health_HEALTH_LOST {
				gpu.Error = lostError
			} else {
				gpu.Error = hangError
			}
			continue
		}
		healthy++
		mean := 0.0
		if secs > 0 {
			mean = w.energy[g] / 1000 / secs
		}
		if !n.supported(g, fEnergy, last) && !w.noInstant[g] && nSlots > 0 {
			mean = w.sumW[g] / float64(nSlots) // no counter: the collector averages instants
		}
		if secs > 0 {
			nodeW += w.energy[g] / 1000 / secs // the truth, for NodePowerW
		}
		optU32(&gpu.PowerMw, true, telemetry.WToMilliwatts(mean))
		if w.noInstant[g] || w.minW[g] > w.maxW[g] {
			optU32(&gpu.PowerMinMw, true, telemetry.WToMilliwatts(mean))
			optU32(&gpu.PowerMaxMw, true, telemetry.WToMilliwatts(mean))
		} else {
			optU32(&gpu.PowerMinMw, true, telemetry.WToMilliwatts(w.minW[g]))
			optU32(&gpu.PowerMaxMw, true, telemetry.WToMilliwatts(w.maxW[g]))
		}
		optU64(&gpu.EnergyMj, n.supported(g, fEnergy, last), uint64(st[g].energyMJ))
		optI32(&gpu.TempC, n.supported(g, fTemp, last), int32(math.Round(st[g].tempC)))
		optI32(&gpu.MemTempC, n.supported(g, fMemTemp, last), int32(math.Round(st[g].tempC+n.p.cfg.MemOffsetC)))
		optU32(&gpu.PowerLimitMw, n.supported(g, fPowerLimit, last), telemetry.WToMilliwatts(n.p.limitW))
		dw, act, r := n.demand(last)
		p, reasons := n.power(g, last, dw, act, st[g].tempC)
		clock, util := n.clockUtil(act, r, reasons, dw*n.gpus[g].scale, p)
		optU32(&gpu.SmClockMhz, n.supported(g, fSMClock, last), clock)
		optU32(&gpu.UtilPct, n.supported(g, fUtil, last), util)
		optU64(&gpu.ThrottleReasons, n.supported(g, fThrottle, last), w.reasons[g]|reasons)
		if w.noInstant[g] {
			for j := range nSlots {
				w.slotW[j] += mean
			}
		}
	}
	var mask uint32
	for j := range nSlots {
		if healthy == 0 {
			mask |= 1 << uint(j%32)
		}
		dst.SlotPowerW = append(dst.SlotPowerW, uint32(w.slotW[j]+0.5))
	}
	dst.SlotMissingMask = mask
	n.fillNodePower(dst, &w, secs)

	fn.mu.Lock()
	fn.last[fn.next] = winPower{endNs: w.endNs, windowNs: int64(window), w: nodeW, ok: true}
	fn.next = (fn.next + 1) % len(fn.last)
	fn.mu.Unlock()
}

// NodePowerW is node i's true mean power over (windowEnd-window, windowEnd]:
// the sum of the mean power of the GPUs a report would carry (lost and hung
// GPUs left out), for correctness tests of sums. It does not advance the
// node: it answers from the last reported windows, or simulates a copy.
func (f *Fleet) NodePowerW(i int, windowEnd time.Time, window time.Duration) float64 {
	fn := &f.nodes[i]
	n := fn.n
	endNs := n.p.scenarioNs(windowEnd)
	fn.mu.Lock()
	for _, lw := range fn.last {
		if lw.ok && lw.endNs == endNs && lw.windowNs == int64(window) {
			fn.mu.Unlock()
			return lw.w
		}
	}
	st, initDone := fn.st, fn.init
	fn.mu.Unlock()

	var w winAcc
	w.endNs, w.startNs = endNs, endNs-int64(window)
	fn.simulate(&st, initDone, &w)
	secs := float64(floorDiv(w.endNs, stepNs)-floorDiv(w.startNs, stepNs)) * stepS
	total := 0.0
	for g := range gpusPerNode {
		if w.healthy[g] && secs > 0 {
			total += w.energy[g] / 1000 / secs
		}
	}
	return total
}

// resetReport clears dst but keeps its slices and Gpu messages (and their
// optional-field pointers) for reuse.
func resetReport(dst *telemetry.NodeReport) {
	gpus := dst.Gpus
	slots := dst.SlotPowerW[:0]
	dst.Site, dst.Hall, dst.Row, dst.Rack, dst.Node = "", "", "", "", ""
	dst.WindowEndUnixNs, dst.WindowMs, dst.SlotMs = 0, 0, 0
	dst.Seq, dst.Replayed, dst.Version, dst.BootId, dst.SlotMissingMask = 0, false, "", 0, 0
	if cap(gpus) < gpusPerNode {
		gpus = make([]*telemetry.Gpu, gpusPerNode)
	}
	gpus = gpus[:gpusPerNode]
	for g := range gpus {
		if gpus[g] == nil {
			gpus[g] = &telemetry.Gpu{}
		}
		resetGpu(gpus[g])
	}
	dst.Gpus = gpus
	dst.SlotPowerW = slots
}

// resetGpu clears g's scalars; Report sets or clears every optional field,
// reusing the storage behind the pointers.
func resetGpu(g *telemetry.Gpu) {
	g.Index, g.Uuid, g.Model, g.Health, g.EnergyEpoch, g.Error = 0, "", "", 0, 0, ""
}

func clearOptional(g *telemetry.Gpu) {
	g.PowerMw, g.PowerMinMw, g.PowerMaxMw, g.PowerLimitMw, g.SmClockMhz, g.UtilPct = nil, nil, nil, nil, nil, nil
	g.EnergyMj, g.ThrottleReasons, g.TempC, g.MemTempC = nil, nil, nil, nil
}

func optU32(pp **uint32, ok bool, v uint32) {
	switch {
	case !ok:
		*pp = nil
	case *pp == nil:
		*pp = new(uint32)
		**pp = v
	default:
		**pp = v
	}
}

func optU64(pp **uint64, ok bool, v uint64) {
	switch {
	case !ok:
		*pp = nil
	case *pp == nil:
		*pp = new(uint64)
		**pp = v
	default:
		**pp = v
	}
}

func optI32(pp **int32, ok bool, v int32) {
	switch {
	case !ok:
		*pp = nil
	case *pp == nil:
		*pp = new(int32)
		**pp = v
	default:
		**pp = v
	}
}
