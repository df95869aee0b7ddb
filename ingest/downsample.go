package ingest

import (
	"hash/maphash"
	"sync"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// downsampler accumulates per-GPU windows for gpu_every > 1 and returns
// energy-correct aggregates every N windows (windows aligned to wall clock:
// a GPU point is written at the end of every window whose index is a
// multiple of N). Its state is one entry per node: bounded by the fleet.
type downsampler struct {
	every  int64
	seed   maphash.Seed
	shards [64]struct {
		sync.Mutex
		nodes map[string]*nodeAcc
	}
}

type nodeAcc struct {
	gpus []gpuAcc
	out  []*telemetry.Gpu
	outs []telemetry.Gpu
}

// gpuAcc sums one GPU's windows; power is weighted by window length so the
// mean is energy / time.
type gpuAcc struct {
	index                uint32
	windows              int
	healthy              bool
	powerWms, powerMs    float64 // Σ power_mw·window_ms, Σ window_ms
	minMw, maxMw         uint32
	haveMin, haveMax     bool
	haveEnergy           bool
	temp, memTemp        int32
	haveTemp, haveMem    bool
	haveLimit            bool
	clockSum, utilSum    float64
	clockN, utilN        int
	throttle             uint64
	haveThrottle         bool
	vPower, vMin, vMax   uint32
	vEnergy              uint64
	vTemp, vMem          int32
	vLimit, vClock, vUtl uint32
	vThrottle            uint64
}

func newDownsampler(every int) *downsampler {
	d := &downsampler{every: int64(every), seed: maphash.MakeSeed()}
	for i := range d.shards {
		d.shards[i].nodes = map[string]*nodeAcc{}
	}
	return d
}

// add accumulates r's GPUs. When r's window closes a group of N windows it
// calls emit with the aggregated GPUs (valid only during the call).
func (d *downsampler) add(r *telemetry.NodeReport, emit func([]*telemetry.Gpu)) {
	key := r.Site + "/" + r.Hall + "/" + r.Row + "/" + r.Rack + "/" + r.Node
	sh := &d.shards[maphash.String(d.seed, key)%uint64(len(d.shards))]
	sh.Lock()
	defer sh.Unlock()
	acc := sh.nodes[key]
	if acc == nil {
		acc = &nodeAcc{}
		sh.nodes[key] = acc
	}
	for _, g := range r.Gpus {
		a := acc.gpu(g.Index)
		a.add(g, float64(r.WindowMs))
	}
	winMs := int64(r.WindowMs)
	if winMs <= 0 {
		winMs = 1000
	}
	if (r.WindowEndUnixNs/1e6/winMs)%d.every != 0 {
		return
	}
	acc.out = acc.out[:0]
	if cap(acc.outs) < len(acc.gpus) {
		acc.outs = make([]telemetry.Gpu, len(acc.gpus))
	}
	acc.outs = acc.outs[:len(acc.gpus)]
	for i := range acc.gpus {
		a := &acc.gpus[i]
		if a.windows == 0 {
			continue
		}
		a.fill(&acc.outs[i])
		acc.out = append(acc.out, &acc.outs[i])
	}
	emit(acc.out)
	for i := range acc.gpus {
		acc.gpus[i] = gpuAcc{index: acc.gpus[i].index}
	}
}

func (n *nodeAcc) gpu(index uint32) *gpuAcc {
	for i := range n.gpus {
		if n.gpus[i].index == index {
			return &n.gpus[i]
		}
	}
	n.gpus = append(n.gpus, gpuAcc{index: index})
	return &n.gpus[len(n.gpus)-1]
}

func (a *gpuAcc) add(g *telemetry.Gpu, winMs float64) {
	if winMs <= 0 {
		winMs = 1000
	}
	if a.windows == 0 {
		a.healthy = true
	}
	a.windows++
	a.healthy = a.healthy && g.Health == telemetry.Health_HEALTH_OK
	if g.PowerMw != nil {
		a.powerWms += float64(*g.PowerMw) * winMs
		a.powerMs += winMs
	}
	if g.PowerMinMw != nil && (!a.haveMin || *g.PowerMinMw < a.minMw) {
		a.minMw, a.haveMin = *g.PowerMinMw, true
	}
	if g.PowerMaxMw != nil && (!a.haveMax || *g.PowerMaxMw > a.maxMw) {
		a.maxMw, a.haveMax = *g.PowerMaxMw, true
	}
	if g.EnergyMj != nil {
		a.vEnergy = *g.EnergyMj
		a.haveEnergy = true
	}
	if g.TempC != nil && (!a.haveTemp || *g.TempC > a.temp) {
		a.temp, a.haveTemp = *g.TempC, true
	}
	if g.MemTempC != nil && (!a.haveMem || *g.MemTempC > a.memTemp) {
		a.memTemp, a.haveMem = *g.MemTempC, true
	}
	if g.PowerLimitMw != nil {
		a.vLimit = *g.PowerLimitMw
		a.haveLimit = true
	}
	if g.SmClockMhz != nil {
		a.clockSum += float64(*g.SmClockMhz)
		a.clockN++
	}
	if g.UtilPct != nil {
		a.utilSum += float64(*g.UtilPct)
		a.utilN++
	}
	if g.ThrottleReasons != nil {
		a.throttle |= *g.ThrottleReasons
		a.haveThrottle = true
	}
}

// fill writes the aggregate into g: mean power = Σ energy / Σ time; min of
// mins, max of maxes and temperatures, last energy counter and limit, mean
// clock and utilisation, OR of throttle reasons, healthy only if every window was.
func (a *gpuAcc) fill(g *telemetry.Gpu) {
	*g = telemetry.Gpu{Index: a.index}
	if !a.healthy {
		g.Health = telemetry.Health_HEALTH_ERROR
	}
	if a.powerMs > 0 {
		g.PowerMw = set(&a.vPower, uint32(a.powerWms/a.powerMs+0.5))
	}
	if a.haveMin {
		g.PowerMinMw = set(&a.vMin, a.minMw)
	}
	if a.haveMax {
		g.PowerMaxMw = set(&a.vMax, a.maxMw)
	}
	if a.haveEnergy {
		g.EnergyMj = &a.vEnergy
	}
	if a.haveTemp {
		g.TempC = set(&a.vTemp, a.temp)
	}
	if a.haveMem {
		g.MemTempC = set(&a.vMem, a.memTemp)
	}
	if a.haveLimit {
		g.PowerLimitMw = &a.vLimit
	}
	if a.clockN > 0 {
		g.SmClockMhz = set(&a.vClock, uint32(a.clockSum/float64(a.clockN)+0.5))
	}
	if a.utilN > 0 {
		g.UtilPct = set(&a.vUtl, uint32(a.utilSum/float64(a.utilN)+0.5))
	}
	if a.haveThrottle {
		g.ThrottleReasons = set(&a.vThrottle, a.throttle)
	}
}
