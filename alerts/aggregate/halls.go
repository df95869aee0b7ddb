package aggregate

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"google.golang.org/protobuf/proto"
)

// hallInputs holds the last windows of every hall's rollup for a site
// aggregator (Config.FromHalls). Halls are treated like nodes: a hall whose
// rollup is late counts with its last figures for stale_after windows.
type hallInputs struct {
	a       *Aggregator
	halls   []*topology.Domain
	byKey   map[string]int
	win     []int64 // [h*ring+r]
	st      []DomainState
	slots   []float64 // [(h*ring+r)*S+s]
	lastWin []int64
	last    []DomainState
	lastSl  []float64 // [h*S+s]
	meters  []int     // meters in each hall's subtree (topology)
	msg     telemetry.Rollup
}

func newHallInputs(a *Aggregator, halls []*topology.Domain, _ int) *hallInputs {
	h := &hallInputs{a: a, byKey: map[string]int{}}
	for _, d := range halls {
		if a.cfg.Scope == nil || isUnder(d, a.cfg.Scope) {
			h.byKey[d.Key()] = len(h.halls)
			h.halls = append(h.halls, d)
		}
	}
	H, R, S := len(h.halls), a.ring, a.nSlots
	h.win = make([]int64, H*R)
	for i := range h.win {
		h.win[i] = -1
	}
	h.st = make([]DomainState, H*R)
	h.slots = make([]float64, H*R*S)
	h.lastWin = make([]int64, H)
	for i := range h.lastWin {
		h.lastWin[i] = -1
	}
	h.last = make([]DomainState, H)
	h.lastSl = make([]float64, H*S)
	h.meters = make([]int, H)
	for _, mt := range a.topo.Meters() {
		for d := mt.Domain; d != nil; d = d.Parent {
			if i, ok := h.byKey[d.Key()]; ok && h.halls[i] == d {
				h.meters[i]++
				break
			}
		}
	}
	return h
}

// ErrNotHall is returned for rollups that are not hall rollups of this scope.
var ErrNotHall = errors.New("not a hall rollup of this aggregator's scope")

// HandleRollup stores one hall rollup (FromHalls aggregators only).
func (a *Aggregator) HandleRollup(data []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.halls
	if h == nil {
		return errors.New("aggregator does not consume hall rollups")
	}
	m := &h.msg
	if err := (proto.UnmarshalOptions{Merge: false}).Unmarshal(data, m); err != nil {
		a.stats.Decode++
		return fmt.Errorf("decode rollup: %w", err)
	}
	if m.GetLevel() != topology.LevelHall {
		a.stats.Unknown++
		return ErrNotHall
	}
	i, ok := h.byKey[strings.Join(m.GetPath(), "/")]
	if !ok {
		a.stats.Unknown++
		return ErrNotHall
	}
	S := a.nSlots
	if int64(m.GetWindowMs())*1e6 != a.windowNs || int64(m.GetSlotMs())*1e6 != int64(a.cfg.Slot) ||
		len(m.GetSlotPowerW()) != S || m.GetWindowEndUnixNs()%a.windowNs != 0 || m.GetWindowEndUnixNs() <= 0 {
		a.stats.Shape++
		return ErrShape
	}
	for _, v := range append([]float64{m.GetPowerW(), m.GetPowerEstW(), m.GetNodePowerW(), m.GetNodePowerEstW(),
		m.GetNodePowerModeledW(), m.GetMeteredW(), m.GetCpuPowerW()}, m.GetSlotPowerW()...) {
		if !(v >= 0 && v < 1e15) {
			a.stats.Shape++
			return fmt.Errorf("%w: power %v out of range", ErrShape, v)
		}
	}
	k := m.GetWindowEndUnixNs() / a.windowNs
	if err := a.admitWindow(k); err != nil {
		return err
	}
	j := i*a.ring + int(k%int64(a.ring))
	h.win[j] = k
	st := DomainState{
		PowerW: m.GetPowerW(), MissingEstW: max(0, m.GetPowerEstW()-m.GetPowerW()),
		NodesReporting: int(m.GetNodesReporting()), StaleNodes: int(m.GetStaleNodes()),
		GPUTempMaxC: noTemp, MemTempMaxC: noTemp, ThrottledGPUs: int(m.GetThrottledGpus()),
		GPUs: int(m.GetGpus()), GPUsHealthy: int(m.GetGpusHealthy()),
	}
	if m.GpuTempMaxC != nil {
		st.GPUTempMaxC = m.GetGpuTempMaxC()
	}
	if m.MemTempMaxC != nil {
		st.MemTempMaxC = m.GetMemTempMaxC()
	}
	st.ContDeltaW = m.GetContinuityDeltaW()
	if m.ContinuityDeltaW == nil || !(math.Abs(st.ContDeltaW) < 1e15) {
		st.ContDeltaW = math.NaN() // an older hall aggregator: derived at the tick
	}
	// Facility figures. A rollup from an older hall aggregator
	// (facility_source UNSPECIFIED) has none: its node power is taken to be
	// its GPU power (power_w, power_est_w: an under-estimate, all of it
	// "modeled"), and it is not metered.
	if m.GetFacilitySource() == telemetry.FacilitySource_FACILITY_SOURCE_UNSPECIFIED {
		st.NodePowerW, st.NodeMissingEstW, st.NodePowerModeledW = st.PowerW, st.MissingEstW, st.PowerW
		st.NodeContDeltaW = st.ContDeltaW // NaN: derived at the tick, like ContDeltaW
	} else {
		st.NodePowerW = m.GetNodePowerW()
		st.NodeMissingEstW = max(0, m.GetNodePowerEstW()-m.GetNodePowerW())
		st.NodePowerModeledW = m.GetNodePowerModeledW()
		st.NodesPowerMeasured = int(m.GetNodesPowerMeasured())
		st.Meters, st.MetersStale = int(m.GetMeters()), int(min(m.GetMetersStale(), m.GetMeters()))
		if m.MeteredW != nil {
			st.MeteredW, st.HasMetered = m.GetMeteredW(), true
		}
		if m.CpuPowerW != nil {
			st.CPUPowerW, st.HasCPUPower = m.GetCpuPowerW(), true
		}
		// The hall's node-power change: its facility continuity delta when
		// that is from node power, else derived at the tick.
		st.NodeContDeltaW = math.NaN()
		if fc := m.GetFacilityContinuityDeltaW(); m.GetFacilitySource() == telemetry.FacilitySource_FACILITY_SOURCE_NODE &&
			m.FacilityContinuityDeltaW != nil && math.Abs(fc) < 1e15 {
			st.NodeContDeltaW = fc
		}
	}
	h.st[j] = st
	copy(h.slots[j*S:j*S+S], m.GetSlotPowerW())
	a.stats.Accepted++
	return nil
}

// accumulate sets each hall's accumulators from its rollup for window k,
// its held figures, or (missing) its last estimate.
func (h *hallInputs) accumulate(k int64) {
	a := h.a
	S, R := a.nSlots, int64(a.ring)
	stale := int64(a.cfg.StaleAfter)
	for i, d := range h.halls {
		acc := &a.acc[d.ID]
		as := a.accSlot[d.ID*S : d.ID*S+S]
		j := i*int(R) + int(k%R)
		switch {
		case h.win[j] == k:
			*acc = h.st[j]
			same := h.lastWin[i] == k-1 && h.last[i].NodesReporting == acc.NodesReporting
			if math.IsNaN(acc.ContDeltaW) {
				acc.ContDeltaW = 0
				if same {
					acc.ContDeltaW = acc.PowerW - h.last[i].PowerW
				}
			}
			if math.IsNaN(acc.NodeContDeltaW) {
				acc.NodeContDeltaW = 0
				if same {
					acc.NodeContDeltaW = acc.NodePowerW - h.last[i].NodePowerW
				}
			}
			copy(as, h.slots[j*S:j*S+S])
			h.lastWin[i], h.last[i] = k, *acc
			copy(h.lastSl[i*S:i*S+S], as)
		case h.lastWin[i] >= 0 && k-h.lastWin[i] <= stale:
			*acc = h.last[i]
			acc.ContDeltaW, acc.NodeContDeltaW = 0, 0 // held at its last figures: no change
			copy(as, h.lastSl[i*S:i*S+S])
		default:
			// Missing: its meters' state is unknown, so all of them are stale.
			*acc = DomainState{GPUTempMaxC: noTemp, MemTempMaxC: noTemp, StaleNodes: d.NodesExpected,
				Meters: h.meters[i], MetersStale: h.meters[i]}
			if h.lastWin[i] >= 0 {
				acc.MissingEstW = h.last[i].PowerW + h.last[i].MissingEstW
				acc.NodeMissingEstW = h.last[i].NodePowerW + h.last[i].NodeMissingEstW
			}
		}
	}
}

// HallKeys lists the halls a FromHalls aggregator expects, sorted.
func (a *Aggregator) HallKeys() []string {
	if a.halls == nil {
		return nil
	}
	out := make([]string, 0, len(a.halls.halls))
	for k := range a.halls.byKey {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
