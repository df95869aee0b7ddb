// Package aggregate sums node power up the power hierarchy (rack → row →
// hall → site, and extra levels such as pdu) once per window, with
// coverage, an estimate that fills missing nodes with their last known
// power, and per-domain ramp, swing and dominant oscillation over a
// sliding window. All per-node and per-domain state lives in dense arrays
// indexed by the topology's node index and domain ID: no maps on the tick.
//
// Time comes from the reports' window timestamps and the caller of Tick,
// never from the wall clock, so tests drive it window by window.
package aggregate

import (
	"errors"
	"fmt"
	"github.com/megawatch/megawatch/internal/plausible"
	"slices"
	"sync"
	"time"

	"github.com/megawatch/megawatch/internal/powermodel"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// Config of an aggregator.
type Config struct {
	Window         time.Duration // report window (1s)
	Slot           time.Duration // slot (100ms)
	StaleAfter     int           // windows a silent node still counts with its last power (3)
	Grace          time.Duration // how late a report may arrive and still land in its window
	AnalysisWindow time.Duration // ramp / swing / oscillation window (60s)
	// Scope limits the aggregator to one domain's subtree (nil: everything).
	Scope *topology.Domain
	// FromHalls makes a site aggregator: its inputs are hall rollups and it
	// computes the domains above the hall level.
	FromHalls bool
	// OscLevels are the levels whose domains get the oscillation spectrum
	// (an FFT of the analysis window every tick, the costliest part of a
	// tick); nil means every level. Ramp and swing are computed everywhere.
	OscLevels []string
	// FacilityOscLevels are the levels whose domains also get the spectrum
	// of the 10 Hz facility estimate (a second FFT); nil means none: only
	// rules on facility oscillation need it (the engine sets the levels
	// they look at). Facility ramp and swing are computed everywhere.
	FacilityOscLevels []string
	// FacilityOscAll gives every level the facility spectrum.
	FacilityOscAll bool
	// Plausible bounds every node report (internal/plausible); the zero
	// value means the defaults.
	Plausible plausible.Bounds
	// MinCoverage is the coverage below which a domain's window is
	// degraded: its figures are partly estimated, and firing alerts on it
	// do not resolve (resolve_min_coverage). 0 never degrades on coverage.
	MinCoverage float64
	// NodeModel estimates node power for nodes that send none. The zero
	// value is the default node type's figures (powermodel.Default, DGX
	// H100: HostW 1500, PerGPUW 387.5).
	NodeModel NodeModel
}

// Validate returns every problem.
func (c Config) Validate() error {
	var errs []error
	if c.Window <= 0 || c.Slot <= 0 || c.Window%c.Slot != 0 {
		errs = append(errs, fmt.Errorf("window %s must be a positive multiple of slot %s", c.Window, c.Slot))
	}
	if c.StaleAfter < 0 {
		errs = append(errs, errors.New("stale_after must not be negative"))
	}
	if c.Grace < 0 {
		errs = append(errs, errors.New("grace must not be negative"))
	}
	if !(c.MinCoverage >= 0 && c.MinCoverage <= 1) {
		errs = append(errs, errors.New("resolve_min_coverage must be within 0..1"))
	}
	if c.Slot > 0 && (c.AnalysisWindow < 2*time.Second || c.AnalysisWindow%c.Slot != 0) {
		errs = append(errs, errors.New("analysis_window must be at least 2s and a multiple of slot"))
	}
	if !(c.NodeModel.HostW >= 0 && c.NodeModel.PerGPUW >= 0 && c.NodeModel.HostW < 1e6 && c.NodeModel.PerGPUW < 1e5) {
		errs = append(errs, errors.New("node_model: host_w and per_gpu_w must be non-negative"))
	}
	return errors.Join(errs...)
}

// Aggregator is safe for concurrent HandleReport/HandleRollup and Tick.
type Aggregator struct {
	cfg  Config
	topo *topology.Topology
	doms []*topology.Domain

	mu       sync.Mutex
	windowNs int64
	nSlots   int // slots per window
	ring     int // windows kept per node (grace)

	// nodes (dense by topology node index)
	nodeIdx   map[string]int32 // host name → index (HandleReport only)
	nodeRack  []int32
	nodeSubj  []string
	inScope   []int32 // node indices this aggregator sums
	rWin      []int64 // [node*ring+r] window index held in ring slot r
	rPowerW   []float64
	rSlots    []uint32 // [(node*ring+r)*nSlots+s]
	rTemp     []int16
	rMem      []int16
	rThrot    []uint16
	rGPUs     []uint16
	rHealthy  []uint16
	lastWin   []int64 // last window the node counted fresh at a tick, -1 never
	lastPower []float64
	lastHlth  []uint16 // healthy GPUs in that window
	// node power (facility): per ring slot, then the last counted
	rNodeW    []float64
	rNodeKind []uint8   // nodeMeasured, nodeCollectorModel, nodeAggModel
	rCPU      []float64 // -1: none sent
	lastNodeW []float64
	lastKind  []uint8
	hostW     float64 // resolved NodeModel
	perGPUW   float64

	meters *meterInputs // meters in scope (nil: none)

	halls *hallInputs // FromHalls only

	// domains (dense by ID)
	compute []int // computed, ascending ID (parents first)
	out     []int // published (in scope)
	isOut   []bool
	acc     []DomainState
	accSlot []float64 // [id*nSlots+s]
	ana     *analysis
	fana    *analysis // facility estimate
	osc     []bool    // [id]: spectrum computed for this domain
	fosc    []bool    // [id]: facility spectrum computed for this domain
	// per domain metered scratch and continuity (dense by ID)
	mOwnW  []float64 // sum of the domain's own fresh/held meters
	mOwnN  []int32   // own meters
	mOwnOK []int32   // own meters fresh or held
	cN     []int32   // computed children
	cOK    []int32   // computed children metered
	cSum   []float64 // their MeteredW
	// coverable: the topology meters this domain (its own meters, or
	// every child coverable): with every meter fresh it would be metered.
	coverable []bool
	mSrc      []uint8   // how MeteredW was found this tick (meteredOwn, meteredChildren, meteredInput)
	lastMW    []float64 // MeteredW of the last tick it was metered
	lastMWin  []int64
	lastMSrc  []uint8

	lastTick int64 // window index of the last tick, -1 none
	run      int   // consecutive ticks since the start or the last gap
	stats    Stats
	mstats   MeterStats
	scratch  report
}

// Stats counts reports by outcome.
type Stats struct {
	Accepted, Decode, Implausible, Forged, Unknown, Mismatch, Late, Future, Shape uint64
}

// New sets up the arrays for topo.
func New(cfg Config, topo *topology.Topology) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Aggregator{cfg: cfg, topo: topo, doms: topo.Domains(), windowNs: int64(cfg.Window),
		nSlots: int(cfg.Window / cfg.Slot), ring: int((cfg.Grace+cfg.Window-1)/cfg.Window) + 2, lastTick: -1}
	if cfg.Plausible != (plausible.Bounds{}) {
		b := cfg.Plausible
		a.scratch.bounds = &b
	}
	D := len(a.doms)
	a.isOut = make([]bool, D)
	hallDepth := -1
	for i, l := range topo.Levels() {
		if l == topology.LevelHall {
			hallDepth = i
		}
	}
	for _, d := range a.doms {
		switch {
		case cfg.FromHalls:
			if d.Depth <= hallDepth && (cfg.Scope == nil || isUnder(d, cfg.Scope)) {
				a.compute = append(a.compute, d.ID)
				if d.Depth < hallDepth {
					a.out = append(a.out, d.ID)
				}
			}
		case cfg.Scope == nil || isUnder(d, cfg.Scope):
			a.compute = append(a.compute, d.ID)
			a.out = append(a.out, d.ID)
		}
	}
	for _, id := range a.out {
		a.isOut[id] = true
	}
	a.acc = make([]DomainState, D)
	a.accSlot = make([]float64, D*a.nSlots)
	a.ana = newAnalysis(D, int(cfg.AnalysisWindow/cfg.Slot), cfg.Slot, a.nSlots)
	a.fana = newAnalysis(D, int(cfg.AnalysisWindow/cfg.Slot), cfg.Slot, a.nSlots)
	a.mOwnW, a.mOwnN, a.mOwnOK = make([]float64, D), make([]int32, D), make([]int32, D)
	a.cN, a.cOK, a.cSum = make([]int32, D), make([]int32, D), make([]float64, D)
	a.mSrc, a.lastMW, a.lastMWin, a.lastMSrc = make([]uint8, D), make([]float64, D), make([]int64, D), make([]uint8, D)
	for i := range a.lastMWin {
		a.lastMWin[i] = -1
	}
	a.coverable = make([]bool, D)
	for i := D - 1; i >= 0; i-- { // children have higher IDs than parents
		d := a.doms[i]
		all := len(d.Children) > 0
		for _, c := range d.Children {
			all = all && a.coverable[c.ID]
		}
		a.coverable[i] = len(d.Meters) > 0 || all
	}
	a.hostW, a.perGPUW = cfg.NodeModel.HostW, cfg.NodeModel.PerGPUW
	if cfg.NodeModel == (NodeModel{}) {
		nt, _ := powermodel.Lookup(powermodel.Default)
		a.hostW, a.perGPUW = nt.HostW, nt.PerGPUW
	}
	a.meters = newMeterInputs(a)
	a.osc, a.fosc = make([]bool, D), make([]bool, D)
	for _, d := range a.doms {
		a.osc[d.ID] = cfg.OscLevels == nil || slices.Contains(cfg.OscLevels, d.Level)
		a.fosc[d.ID] = cfg.FacilityOscAll || slices.Contains(cfg.FacilityOscLevels, d.Level)
	}
	if cfg.FromHalls {
		a.halls = newHallInputs(a, topo.DomainsAt(topology.LevelHall), hallDepth)
		return a, nil
	}
	nodes := topo.Nodes()
	N := len(nodes)
	a.nodeIdx = make(map[string]int32, N)
	a.nodeRack = make([]int32, N)
	a.nodeSubj = make([]string, N)
	for _, n := range nodes {
		a.nodeIdx[n.Name] = int32(n.Index)
		a.nodeRack[n.Index] = int32(n.Rack.ID)
		a.nodeSubj[n.Index], _ = telemetry.PowerSubject(n.Location)
		if cfg.Scope == nil || cfg.Scope.Contains(n) {
			a.inScope = append(a.inScope, int32(n.Index))
		}
	}
	R, S := a.ring, a.nSlots
	a.rWin = make([]int64, N*R)
	for i := range a.rWin {
		a.rWin[i] = -1
	}
	a.rPowerW = make([]float64, N*R)
	a.rSlots = make([]uint32, N*R*S)
	a.rTemp = make([]int16, N*R)
	a.rMem = make([]int16, N*R)
	a.rThrot = make([]uint16, N*R)
	a.rGPUs = make([]uint16, N*R)
	a.rHealthy = make([]uint16, N*R)
	a.lastWin = make([]int64, N)
	for i := range a.lastWin {
		a.lastWin[i] = -1
	}
	a.lastPower = make([]float64, N)
	a.lastHlth = make([]uint16, N)
	a.rNodeW = make([]float64, N*R)
	a.rNodeKind = make([]uint8, N*R)
	a.rCPU = make([]float64, N*R)
	a.lastNodeW = make([]float64, N)
	a.lastKind = make([]uint8, N)
	return a, nil
}

// isUnder reports whether d is s or below s.
func isUnder(d, s *topology.Domain) bool {
	for ; d != nil; d = d.Parent {
		if d == s {
			return true
		}
	}
	return false
}

// Out lists the IDs of the domains this aggregator publishes, parents first.
func (a *Aggregator) Out() []int { return a.out }

// Topology is the topology the aggregator sums over.
func (a *Aggregator) Topology() *topology.Topology { return a.topo }

// SlotsPerWindow is window/slot.
func (a *Aggregator) SlotsPerWindow() int { return a.nSlots }

// Stats returns the report counters.
func (a *Aggregator) Stats() Stats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stats
}

// Report errors, counted in Stats.
var (
	ErrUnknownNode = errors.New("node not in topology")
	ErrMismatch    = errors.New("report location does not match its subject")
	ErrLate        = errors.New("report for a window already aggregated")
	ErrFuture      = errors.New("report too far in the future")
	ErrShape       = errors.New("report window/slot does not match the aggregator")
)

// CountForged counts a report refused before HandleReport because its
// Nats-Msg-Id names another node or window (CheckReportMsgID).
func (a *Aggregator) CountForged() {
	a.mu.Lock()
	a.stats.Forged++
	a.mu.Unlock()
}

// HandleReport decodes one NodeReport published on subject and stores it
// in its window's slot. It allocates nothing on success.
func (a *Aggregator) HandleReport(subject string, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &a.scratch
	if err := decodeReport(data, r); err != nil {
		if errors.Is(err, ErrImplausible) {
			a.stats.Implausible++
		} else {
			a.stats.Decode++
		}
		return err
	}
	idx, ok := a.nodeIdx[string(r.node)]
	if !ok {
		a.stats.Unknown++
		return ErrUnknownNode
	}
	if subject != a.nodeSubj[idx] {
		a.stats.Mismatch++
		return ErrMismatch
	}
	loc := &a.topo.Nodes()[idx].Location
	if string(r.site) != loc.Site || string(r.hall) != loc.Hall || string(r.row) != loc.Row || string(r.rack) != loc.Rack {
		a.stats.Mismatch++
		return ErrMismatch
	}
	if int64(r.windowMs)*1e6 != a.windowNs || time.Duration(r.slotMs)*time.Millisecond != a.cfg.Slot || r.windowEndNs%a.windowNs != 0 {
		a.stats.Shape++
		return ErrShape
	}
	k := r.windowEndNs / a.windowNs
	if err := a.admitWindow(k); err != nil {
		return err
	}
	R, S := a.ring, a.nSlots
	j := int(idx)*R + int(k%int64(R))
	a.rWin[j] = k
	var p float64
	switch {
	case r.hasPower:
		p = float64(r.powerMW) / 1000
	case len(r.slots) > 0:
		var s uint64
		for _, v := range r.slots {
			s += uint64(v)
		}
		p = float64(s) / float64(len(r.slots))
	}
	a.rPowerW[j] = p
	dst := a.rSlots[j*S : j*S+S]
	if len(r.slots) == S {
		copy(dst, r.slots)
	} else {
		for s := range dst {
			dst[s] = uint32(p + 0.5)
		}
	}
	a.rTemp[j] = clamp16(r.gpuTempMax)
	a.rMem[j] = clamp16(r.memTempMax)
	a.rThrot[j] = uint16(min(r.throttled, 65535))
	a.rGPUs[j] = uint16(min(r.gpus, 65535))
	a.rHealthy[j] = uint16(min(r.healthy, 65535))
	switch {
	case !r.hasNodePower:
		a.rNodeW[j], a.rNodeKind[j] = p+a.hostW+a.perGPUW*float64(r.gpus), nodeAggModel
	case r.nodePowerSrc == telemetry.NodePowerSource_NODE_POWER_MODEL || r.nodePowerSrc == telemetry.NodePowerSource_NODE_POWER_NONE:
		a.rNodeW[j], a.rNodeKind[j] = float64(r.nodePowerMW)/1000, nodeCollectorModel
	default: // REDFISH, HWMON, and measured sources newer than this aggregator
		a.rNodeW[j], a.rNodeKind[j] = float64(r.nodePowerMW)/1000, nodeMeasured
	}
	a.rCPU[j] = -1
	if r.hasCPUPower {
		a.rCPU[j] = float64(r.cpuPowerMW) / 1000
	}
	a.stats.Accepted++
	return nil
}

func clamp16(v int32) int16 {
	if v == noTemp {
		return -32768
	}
	return int16(max(-32767, min(32767, v)))
}

// admitWindow accepts window k unless it is at or before the last tick
// (late) or beyond the history ring (future), counting what it refuses.
func (a *Aggregator) admitWindow(k int64) error {
	err := a.windowErr(k)
	switch err {
	case ErrLate:
		a.stats.Late++
	case ErrFuture:
		a.stats.Future++
	}
	return err
}

// windowErr is admitWindow without counting.
func (a *Aggregator) windowErr(k int64) error {
	if a.lastTick < 0 {
		return nil
	}
	if k <= a.lastTick {
		return ErrLate
	}
	if k >= a.lastTick+int64(a.ring) {
		return ErrFuture
	}
	return nil
}

// Tick aggregates the window ending at windowEnd (wall-clock aligned) and
// returns the domain states, indexed by domain ID (use Out for the list).
// The returned slice is reused by the next Tick.
func (a *Aggregator) Tick(windowEnd time.Time) []DomainState {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := windowEnd.UnixNano() / a.windowNs
	S := a.nSlots
	for _, id := range a.compute {
		a.acc[id] = DomainState{GPUTempMaxC: noTemp, MemTempMaxC: noTemp}
		clear(a.accSlot[id*S : id*S+S])
		a.mOwnW[id], a.mOwnN[id], a.mOwnOK[id], a.cN[id], a.cOK[id], a.cSum[id], a.mSrc[id] = 0, 0, 0, 0, 0, 0, 0
	}
	if a.halls != nil {
		a.halls.accumulate(k)
	} else {
		a.accumulateNodes(k)
	}
	if a.meters != nil {
		a.meters.accumulate(k)
	}
	// Children after parents in ID order: walk backwards, adding each
	// computed domain into its parent.
	for i := len(a.compute) - 1; i >= 0; i-- {
		id := a.compute[i]
		a.settleMetered(id) // its children are done: higher IDs
		p := a.doms[id].Parent
		if p == nil || a.doms[id] == a.cfg.Scope {
			continue
		}
		a.acc[p.ID].add(&a.acc[id])
		a.cN[p.ID]++
		if a.acc[id].HasMetered {
			a.cOK[p.ID]++
			a.cSum[p.ID] += a.acc[id].MeteredW
		}
		ps, cs := a.accSlot[p.ID*S:p.ID*S+S], a.accSlot[id*S:id*S+S]
		for s := range ps {
			ps[s] += cs[s]
		}
	}
	// The analysis history starts only once the aggregator has seen every
	// reporting node for stale_after+1 windows, after a start or a gap in
	// ticks: before that the sums hold only the nodes heard from so far, and
	// the climb from nothing to the campus's power would read as a ramp of
	// hundreds of MW — a false page at every restart.
	if a.lastTick >= 0 && k == a.lastTick+1 {
		a.run++
	} else {
		a.run = 0
	}
	gap := a.run <= a.cfg.StaleAfter+1
	for _, id := range a.out {
		d := &a.acc[id]
		dom := a.doms[id]
		d.ID = id
		d.WindowEnd = windowEnd
		d.NodesExpected = dom.NodesExpected
		d.CapacityW = dom.CapacityW
		d.Slots = a.accSlot[id*S : id*S+S]
		d.PowerMaxW = slices.Max(d.Slots)
		d.PowerEstW = d.PowerW + d.MissingEstW
		d.PowerMaxEstW = d.PowerMaxW + d.MissingEstW
		// Headroom is what the estimate leaves: silent nodes never make room.
		d.HeadroomW = d.CapacityW - d.PowerEstW
		d.Coverage = 1
		if d.NodesExpected > 0 {
			d.Coverage = float64(d.NodesReporting) / float64(d.NodesExpected)
		}
		d.Degraded = d.Coverage < a.cfg.MinCoverage
		a.ana.update(id, d.PowerEstW, d.ContDeltaW, d.Slots, gap, a.osc[id], &d.Analysis)
		a.facility(id, d, k)
		a.fana.update(id, d.FacilityW, d.FacilityContDeltaW, d.Slots, gap, a.fosc[id], &d.Facility)
	}
	a.lastTick = k
	return a.acc
}

func (a *Aggregator) accumulateNodes(k int64) {
	R, S := int64(a.ring), a.nSlots
	r := int(k % R)
	stale := int64(a.cfg.StaleAfter)
	for _, i32 := range a.inScope {
		i := int(i32)
		d := &a.acc[a.nodeRack[i]]
		ds := a.accSlot[int(a.nodeRack[i])*S : int(a.nodeRack[i])*S+S]
		j := i*int(R) + r
		switch {
		case a.rWin[j] == k:
			p := a.rPowerW[j]
			d.PowerW += p
			d.NodesReporting++
			// Coverage-proof change: only a node that reported the previous
			// window too, with the same healthy GPUs, adds its change of power
			// (and of node power, when its node-power source kind is the same).
			nw, kind := a.rNodeW[j], a.rNodeKind[j]
			if a.lastWin[i] == k-1 && a.lastHlth[i] == a.rHealthy[j] {
				d.ContDeltaW += p - a.lastPower[i]
				if a.lastKind[i] == kind {
					d.NodeContDeltaW += nw - a.lastNodeW[i]
				}
			}
			a.lastHlth[i] = a.rHealthy[j]
			d.NodePowerW += nw
			if kind == nodeMeasured {
				d.NodesPowerMeasured++
			} else {
				d.NodePowerModeledW += nw
			}
			if c := a.rCPU[j]; c >= 0 {
				d.CPUPowerW += c
				d.HasCPUPower = true
			}
			a.lastNodeW[i], a.lastKind[i] = nw, kind
			src := a.rSlots[j*S : j*S+S]
			for s := range ds {
				ds[s] += float64(src[s])
			}
			if t := int32(a.rTemp[j]); t != -32768 && t > d.GPUTempMaxC {
				d.GPUTempMaxC = t
			}
			if t := int32(a.rMem[j]); t != -32768 && t > d.MemTempMaxC {
				d.MemTempMaxC = t
			}
			d.ThrottledGPUs += int(a.rThrot[j])
			d.GPUs += int(a.rGPUs[j])
			d.GPUsHealthy += int(a.rHealthy[j])
			a.lastWin[i], a.lastPower[i] = k, p
		case a.lastWin[i] >= 0 && k-a.lastWin[i] <= stale:
			p := a.lastPower[i]
			d.PowerW += p
			d.NodesReporting++
			d.NodesHeld++
			for s := range ds {
				ds[s] += p
			}
			nw := a.lastNodeW[i]
			d.NodePowerW += nw
			if a.lastKind[i] == nodeMeasured {
				d.NodesPowerMeasured++
			} else {
				d.NodePowerModeledW += nw
			}
		default:
			d.StaleNodes++
			if a.lastWin[i] >= 0 {
				d.MissingEstW += a.lastPower[i]
				d.NodeMissingEstW += a.lastNodeW[i]
			}
		}
	}
}

// History copies domain id's analysis series at slot resolution (the last
// analysis window), oldest first, into dst, shifted so that its last window
// sits at the current estimate: its shape is what ramp, swing and
// oscillation see.
func (a *Aggregator) History(id int, dst []float64) []float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ana.plotHistory(id, dst)
}
