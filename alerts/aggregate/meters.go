package aggregate

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"google.golang.org/protobuf/proto"
)

// NodeModel estimates the node power of a node that sent no node_power_mw:
// HostW + PerGPUW × GPUs + the GPUs' power (internal/powermodel has the
// figures of known node types). The zero value means the default node type
// (powermodel.Default: DGX H100, HostW 1500, PerGPUW 387.5).
type NodeModel struct {
	HostW   float64 // CPUs, memory, storage, NICs: does not scale with the GPUs
	PerGPUW float64 // NVSwitch share, fans, VRM and PSU losses per GPU
}

// Kinds of a node's node power in a window.
const (
	nodeAggModel       uint8 = iota // no node_power_mw: GPU power + node_model
	nodeMeasured                    // REDFISH, HWMON
	nodeCollectorModel              // the collector's model (MODEL)
)

// How a domain's MeteredW was found at a tick.
const (
	meteredNone uint8 = iota
	meteredOwn
	meteredChildren
	meteredInput // a hall rollup (site aggregators)
)

// MeterStats counts meter reports by outcome. Accepted are fresh readings
// stored, Stale stale reports (counted, never stored over a fresh one).
type MeterStats struct {
	Accepted, Stale, Decode, Unknown, Mismatch, Late, Future, Shape uint64
}

// ErrNotImplemented was returned by the stubs of the facility power
// contract; nothing returns it any more (kept for callers written against
// them).
var ErrNotImplemented = errors.New("not implemented yet")

// ErrUnknownMeter is returned for a meter not in the topology or scope.
var ErrUnknownMeter = errors.New("meter not in topology or scope")

// meterInputs holds the last windows of every meter in scope, dense by
// meter index: the same ring as the nodes'.
type meterInputs struct {
	a      *Aggregator
	meters []*topology.Meter
	idx    map[string]int32
	subj   []string
	win    []int64   // [m*ring+r] window held in ring slot r
	w      []float64 // its power (fresh only)
	fresh  []bool
	hold   []int64 // windows a fresh reading of that slot is held
	last   []int64 // last window counted fresh at a tick, -1 never
	lastW  []float64
	lastH  []int64 // hold of that reading
	msg    telemetry.MeterReport
}

// newMeterInputs keeps the topology's meters on the domains this aggregator
// publishes (its scope; above the halls for a site aggregator: the halls'
// own meters come in their rollups). nil when there are none.
func newMeterInputs(a *Aggregator) *meterInputs {
	m := &meterInputs{a: a, idx: map[string]int32{}}
	for _, mt := range a.topo.Meters() {
		if !a.isOut[mt.Domain.ID] {
			continue
		}
		s, err := telemetry.MeterSubject(mt.Domain.Path, mt.Name)
		if err != nil {
			continue // the topology validated the names: never happens
		}
		m.idx[mt.Name] = int32(len(m.meters))
		m.meters = append(m.meters, mt)
		m.subj = append(m.subj, s)
	}
	if len(m.meters) == 0 {
		return nil
	}
	M, R := len(m.meters), a.ring
	m.win = make([]int64, M*R)
	for i := range m.win {
		m.win[i] = -1
	}
	m.w, m.fresh, m.hold = make([]float64, M*R), make([]bool, M*R), make([]int64, M*R)
	m.last, m.lastW, m.lastH = make([]int64, M), make([]float64, M), make([]int64, M)
	for i := range m.last {
		m.last[i] = -1
	}
	return m
}

// HandleMeter decodes one MeterReport (telemetry.MeterReport) published on
// subject (megawatch.v1.meter.<domain path>.<meter>) and stores it in its
// window. A fresh report wins over a stale one of the same meter and
// window, whatever their order; of two fresh ones the first stays. Meters
// outside the aggregator's scope are ErrUnknownMeter. window_ms must be a
// positive multiple of the aggregator's window, the window end aligned to
// it; a meter slower than the window is held until its next reading.
func (a *Aggregator) HandleMeter(subject string, data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := a.meters
	if m == nil {
		a.mstats.Unknown++
		return ErrUnknownMeter
	}
	r := &m.msg
	if err := proto.Unmarshal(data, r); err != nil {
		a.mstats.Decode++
		return fmt.Errorf("decode meter report: %w", err)
	}
	i, ok := m.idx[r.GetMeter()]
	if !ok {
		a.mstats.Unknown++
		return ErrUnknownMeter
	}
	dom := m.meters[i].Domain
	if subject != m.subj[i] || r.GetLevel() != dom.Level || !slices.Equal(r.GetPath(), dom.Path) {
		a.mstats.Mismatch++
		return ErrMismatch
	}
	wn, end := int64(r.GetWindowMs())*1e6, r.GetWindowEndUnixNs()
	if wn <= 0 || wn%a.windowNs != 0 || end <= 0 || end%a.windowNs != 0 {
		a.mstats.Shape++
		return ErrShape
	}
	fresh := !r.GetStale()
	if fresh && (r.PowerW == nil || !(r.GetPowerW() >= 0 && r.GetPowerW() < 1e12)) {
		a.mstats.Decode++
		return fmt.Errorf("meter %s: fresh report with power_w %v: want 0 ≤ W < 1e12", r.GetMeter(), r.PowerW)
	}
	k := end / a.windowNs
	switch err := a.windowErr(k); err {
	case nil:
	case ErrLate:
		a.mstats.Late++
		return err
	default:
		a.mstats.Future++
		return err
	}
	j := int(i)*a.ring + int(k%int64(a.ring))
	if !fresh {
		a.mstats.Stale++
		if m.win[j] != k {
			m.win[j], m.fresh[j] = k, false
		}
		return nil
	}
	a.mstats.Accepted++
	if m.win[j] == k && m.fresh[j] {
		return nil // the HA peer's copy: the first stays
	}
	m.win[j], m.fresh[j], m.w[j] = k, true, r.GetPowerW()
	m.hold[j] = int64(a.cfg.StaleAfter) + wn/a.windowNs - 1
	return nil
}

// accumulate counts every meter at window k into its domain: fresh (a
// fresh reading for k), held (the last fresh reading, for its hold more
// windows) or stale.
func (m *meterInputs) accumulate(k int64) {
	a := m.a
	R := int64(a.ring)
	for i, mt := range m.meters {
		id := mt.Domain.ID
		j := i*int(R) + int(k%R)
		if m.win[j] == k && m.fresh[j] {
			m.last[i], m.lastW[i], m.lastH[i] = k, m.w[j], m.hold[j]
		}
		a.mOwnN[id]++
		a.acc[id].Meters++
		if m.last[i] >= 0 && k-m.last[i] <= m.lastH[i] {
			a.mOwnOK[id]++
			a.mOwnW[id] += m.lastW[i]
		} else {
			a.acc[id].MetersStale++
		}
	}
}

// settleMetered decides domain id's MeteredW once its children are summed:
// its own meters when all are fresh or held, else its children's when every
// computed child is metered, else none. A leaf without meters keeps what
// its input said (a hall rollup) or none.
func (a *Aggregator) settleMetered(id int) {
	d := &a.acc[id]
	switch {
	case a.mOwnN[id] > 0 && a.mOwnOK[id] == a.mOwnN[id]:
		d.MeteredW, d.HasMetered, a.mSrc[id] = a.mOwnW[id], true, meteredOwn
	case a.cN[id] > 0 && a.cOK[id] == a.cN[id]:
		d.MeteredW, d.HasMetered, a.mSrc[id] = a.cSum[id], true, meteredChildren
	case a.mOwnN[id] > 0 || a.cN[id] > 0:
		d.MeteredW, d.HasMetered, a.mSrc[id] = 0, false, meteredNone
	case d.HasMetered:
		a.mSrc[id] = meteredInput
	}
}

// facility fills d's facility figures (after its GPU figures) for window k.
func (a *Aggregator) facility(id int, d *DomainState, k int64) {
	d.NodePowerEstW = d.NodePowerW + d.NodeMissingEstW
	d.FacilityW, d.UnaccountedW = d.NodePowerEstW, 0
	d.FacilityContDeltaW = d.NodeContDeltaW
	if d.HasMetered {
		d.FacilityW = d.MeteredW
		d.UnaccountedW = d.MeteredW - d.NodePowerW
		if a.lastMWin[id] == k-1 && a.lastMSrc[id] == a.mSrc[id] {
			d.FacilityContDeltaW = d.MeteredW - a.lastMW[id]
		}
		a.lastMW[id], a.lastMWin[id], a.lastMSrc[id] = d.MeteredW, k, a.mSrc[id]
	}
	mean := 0.0
	for _, v := range d.Slots {
		mean += v
	}
	if len(d.Slots) > 0 {
		mean /= float64(len(d.Slots))
	}
	d.FacilityMaxW = d.PowerMaxW + d.FacilityW - mean
	if math.IsNaN(d.FacilityMaxW) {
		d.FacilityMaxW = d.FacilityW
	}
	d.FacilityHeadroomW = d.CapacityW - d.FacilityW
	// Degraded when meters should cover the domain and do not (stale), or
	// the node figure stands in with too few nodes reporting. A domain that
	// is only partly metered by design (some racks without PDUs) is not
	// degraded for that: its facility figure is the node sum.
	d.FacilityDegraded = !d.HasMetered && (a.coverable[id] || d.Coverage < a.cfg.MinCoverage)
}

// MeterStats returns the meter report counters.
func (a *Aggregator) MeterStats() MeterStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mstats
}

// HasMeters reports whether any meter is in the aggregator's scope (the
// caller need not read MEGAWATCH_METER otherwise).
func (a *Aggregator) HasMeters() bool { return a.meters != nil }
