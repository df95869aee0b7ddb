package sim

import (
	"context"
	"hash/fnv"
	"math"
	"path"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/internal/telemetry"
)

const (
	gpusPerNode = 8
	stepNs      = int64(10 * time.Millisecond)  // integration sub-step (grid from Epoch)
	noiseSlotNs = int64(100 * time.Millisecond) // noise is constant over one 100 ms slot
	stepS       = float64(stepNs) / 1e9

	throttleGainPerC  = 0.1 // power above idle shrinks by 10 % per °C above slowdown
	throttleFloor     = 0.5 // ... down to half
	hwSlowdownMarginC = 5   // HW thermal slowdown this far above slowdown_c
	checkpointIdleMul = 1.3 // checkpoint power = idle × this
)

// spec is what a GPU model brings.
type spec struct {
	name          string // nvml name
	tdpW, idleW   float64
	rCPerW        float64
	maxClockMHz   float64
	idleClockMHz  float64
	ckptClockFrac float64
	// Host power without the GPUs, at idle and at full GPU load.
	hostIdleW, hostMaxW float64
}

func lookupSpec(model string) (spec, bool) {
	switch model {
	case "dgxh100":
		return spec{name: gpus.H100_SXM5_80GB.Name, tdpW: 700, idleW: 70, rCPerW: 0.06,
			maxClockMHz: 1980, idleClockMHz: 345, ckptClockFrac: 0.7, hostIdleW: 1900, hostMaxW: 4600}, true
	case "dgxb200":
		return spec{name: gpus.B200_SXM5_180GB.Name, tdpW: 1000, idleW: 140, rCPerW: 0.042,
			maxClockMHz: 1965, idleClockMHz: 345, ckptClockFrac: 0.7, hostIdleW: 2600, hostMaxW: 6300}, true
	}
	return spec{tdpW: 700}, false
}

// field identifies a readable quantity for not_supported and hang faults.
type field uint8

const (
	fAll field = iota // hang on every call
	fPowerInstant
	fPower
	fEnergy
	fTemp
	fMemTemp
	fPowerLimit
	fSMClock
	fUtil
	fThrottle
	fieldCount
)

var fieldNameList = [...]string{"", FieldPowerInstant, FieldPower, FieldEnergy, FieldTemp, FieldMemTemp,
	FieldPowerLimit, FieldSMClock, FieldUtil, FieldThrottle}

func fieldByName(s string) (field, bool) {
	for i, n := range fieldNameList {
		if i > 0 && n == s {
			return field(i), true
		}
	}
	return fAll, false
}

func fieldNames() []string { return fieldNameList[1:] }

// activity is what a GPU is doing in one instant.
type activity uint8

const (
	actIdle activity = iota
	actCompute
	actComm
	actCheckpoint
)

// params is a validated Config resolved into the numbers the model uses.
type params struct {
	cfg                 Config
	spec                spec
	epochNs             int64 // Unix ns of scenario time 0
	tdpW, idleW, limitW float64
	rCPerW              float64
	k                   float64 // 1 - exp(-step/tau)
	hostIdleW, hostMaxW float64
	estimate            *nodepower.Model // node_power: model
}

func newParams(cfg Config) (*params, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sp, _ := lookupSpec(cfg.Model)
	p := &params{cfg: cfg, spec: sp, tdpW: sp.tdpW, idleW: sp.idleW, rCPerW: sp.rCPerW}
	if !cfg.Epoch.IsZero() {
		p.epochNs = cfg.Epoch.UnixNano()
	}
	if cfg.TDPW > 0 {
		p.tdpW = cfg.TDPW
	}
	if cfg.IdleW > 0 {
		p.idleW = cfg.IdleW
	}
	p.limitW = p.tdpW
	if cfg.PowerLimitW > 0 {
		p.limitW = cfg.PowerLimitW
	}
	if cfg.ThermalRCPerW > 0 {
		p.rCPerW = cfg.ThermalRCPerW
	}
	p.k = -math.Expm1(-float64(stepNs) / float64(cfg.ThermalTau))
	p.hostIdleW, p.hostMaxW = sp.hostIdleW, sp.hostMaxW
	if cfg.HostIdleW > 0 {
		p.hostIdleW = cfg.HostIdleW
	}
	if cfg.HostMaxW > 0 {
		p.hostMaxW = cfg.HostMaxW
	}
	p.estimate = nodepower.NewModel(nodepower.ModelConfig{NodeType: "auto"})
	return p, nil
}

// scenarioNs is t as nanoseconds since the scenario epoch.
func (p *params) scenarioNs(t time.Time) int64 { return t.UnixNano() - p.epochNs }

// job is a Job in nanoseconds and watts.
type job struct {
	startNs, stopNs, rampNs int64
	periodNs, dutyNs        int64
	ckEveryNs, ckForNs      int64
	computeW, commW, ckptW  float64
}

// fault is a Fault resolved for one node.
type fault struct {
	kind            string
	gpu             int // -1 = all
	field           field
	fromNs, untilNs int64 // untilNs 0 = for ever
	hang            time.Duration
	noise           float64
}

func (f *fault) active(g int, s int64) bool {
	return (f.gpu < 0 || f.gpu == g) && s >= f.fromNs && (f.untilNs == 0 || s < f.untilNs)
}

// gpuParams is the stateless per-GPU variation.
type gpuParams struct {
	scale  float64 // power multiplier
	inletC float64
	rCPerW float64
	resets []int64 // energy_reset times, ascending
}

// node is the model of one node: its jobs, faults and GPUs. Immutable after
// newNode, so it is shared freely.
type node struct {
	p      *params
	loc    telemetry.Location
	hash   uint64
	jobs   []job
	faults []fault
	gpus   [gpusPerNode]gpuParams
	// nodePower is what this node reports as node power: redfish, hwmon,
	// model or none (Config.NodePower, resolved through NodePowerMix).
	nodePower string
}

func newNode(p *params, loc telemetry.Location) *node {
	h := fnv.New64a()
	h.Write([]byte(loc.String()))
	n := &node{p: p, loc: loc, hash: mix(p.cfg.Seed ^ h.Sum64()), nodePower: p.cfg.nodePowerOf(loc)}
	for _, j := range p.cfg.Jobs {
		if !matchSelector(j.Nodes, loc) {
			continue
		}
		n.jobs = append(n.jobs, job{
			startNs: int64(j.Start), stopNs: int64(j.Stop), rampNs: int64(j.Ramp),
			periodNs: int64(j.Period), dutyNs: int64(float64(j.Period) * j.Duty),
			ckEveryNs: int64(j.CheckpointEvery), ckForNs: int64(j.CheckpointFor),
			computeW: j.ComputeFrac * p.tdpW, commW: j.CommFrac * p.tdpW, ckptW: p.idleW * checkpointIdleMul,
		})
	}
	for _, f := range p.cfg.Faults {
		if !matchSelector(f.Node, loc) {
			continue
		}
		fd, _ := fieldByName(f.Field)
		n.faults = append(n.faults, fault{kind: f.Kind, gpu: f.GPU, field: fd,
			fromNs: int64(f.From), untilNs: int64(f.Until), hang: f.Hang, noise: f.Noise})
	}
	v := p.cfg.Variation
	for g := range n.gpus {
		gp := &n.gpus[g]
		gp.scale = 1 + v*unit(hash3(n.hash, uint64(g), 1))
		gp.inletC = p.cfg.InletC + 100*v*unit(hash3(n.hash, uint64(g), 2)) // 2 % → ±2 °C
		gp.rCPerW = p.rCPerW * (1 + v*unit(hash3(n.hash, uint64(g), 3)))
		for _, f := range n.faults {
			if f.kind == FaultEnergyReset && (f.gpu < 0 || f.gpu == g) {
				gp.resets = append(gp.resets, f.fromNs)
			}
		}
		sortInt64(gp.resets)
	}
	return n
}

// demand is the node's per-GPU power demand at scenario time s, before the
// per-GPU scale, noise, power cap and thermal throttling. The first active
// job (in config order) wins; r is its ramp factor.
func (n *node) demand(s int64) (w float64, act activity, r float64) {
	idle := n.p.idleW
	for i := range n.jobs {
		j := &n.jobs[i]
		if s < j.startNs || (j.stopNs != 0 && s >= j.stopNs) {
			continue
		}
		r = 1
		rel := s - j.startNs
		if j.rampNs > 0 {
			if rel < j.rampNs {
				r = float64(rel) / float64(j.rampNs)
			}
			if j.stopNs != 0 {
				if d := j.stopNs - s; d < j.rampNs {
					r = min(r, float64(d)/float64(j.rampNs))
				}
			}
		}
		level, act := j.computeW, actCompute
		if j.ckEveryNs > 0 && rel%j.ckEveryNs >= j.ckEveryNs-j.ckForNs {
			level, act = j.ckptW, actCheckpoint
		} else if rel%j.periodNs >= j.dutyNs {
			level, act = j.commW, actComm
		}
		return idle + r*(level-idle), act, r
	}
	return idle, actIdle, 0
}

// meanDemand is demand averaged over the compute/comm cycle, checkpoints
// ignored (used for the initial, steady-state temperature).
func (n *node) meanDemand(s int64) float64 {
	w, act, r := n.demand(s)
	if act == actIdle {
		return w
	}
	for i := range n.jobs {
		j := &n.jobs[i]
		if s < j.startNs || (j.stopNs != 0 && s >= j.stopNs) {
			continue
		}
		d := float64(j.dutyNs) / float64(j.periodNs)
		return n.p.idleW + r*(d*j.computeW+(1-d)*j.commW-n.p.idleW)
	}
	return w
}

// noiseFrac is the fractional noise std dev of GPU g at s.
func (n *node) noiseFrac(g int, s int64) float64 {
	v := n.p.cfg.Noise
	for i := range n.faults {
		f := &n.faults[i]
		if f.kind == FaultNoise && f.active(g, s) {
			v += f.noise
		}
	}
	return v
}

// power is GPU g's power at scenario time s for node demand w and GPU
// temperature tempC, with the throttle reasons in force.
func (n *node) power(g int, s int64, w float64, act activity, tempC float64) (float64, uint64) {
	gp := &n.gpus[g]
	d := w * gp.scale
	if nf := n.noiseFrac(g, s); nf > 0 {
		slot := floorDiv(s, noiseSlotNs)
		d *= 1 + nf*math.Sqrt(3)*unit(hash3(n.hash, uint64(g), uint64(slot)^0x9e3779b97f4a7c15))
	}
	var reasons uint64
	if act == actIdle {
		reasons |= nvml.ClocksEventReasonGpuIdle
	}
	if d >= n.p.limitW {
		d = n.p.limitW
		reasons |= nvml.ClocksEventReasonSwPowerCap
	}
	if over := tempC - n.p.cfg.SlowdownC; over > 0 {
		f := max(throttleFloor, 1-throttleGainPerC*over)
		idle := n.p.idleW
		if d > idle {
			d = idle + (d-idle)*f
		}
		reasons |= nvml.ClocksEventReasonSwThermalSlowdown
		if over > hwSlowdownMarginC {
			reasons |= nvml.ClocksThrottleReasonHwThermalSlowdown
		}
	}
	return max(d, 0), reasons
}

// clockUtil is GPU g's SM clock (MHz) and utilisation (%) for an activity.
func (n *node) clockUtil(act activity, r float64, reasons uint64, w, p float64) (clock, util uint32) {
	sp := n.p.spec
	c := sp.idleClockMHz
	u := 0.0
	switch act {
	case actCompute:
		c, u = sp.maxClockMHz, 98
	case actComm:
		c, u = sp.maxClockMHz, 35
	case actCheckpoint:
		c, u = sp.maxClockMHz*sp.ckptClockFrac, 3
	}
	if act != actIdle {
		c = sp.idleClockMHz + r*(c-sp.idleClockMHz)
		u *= r
		if reasons&(nvml.ClocksEventReasonSwPowerCap|nvml.ClocksEventReasonSwThermalSlowdown) != 0 && w > 0 {
			c *= min(1, p/w) // clocks drop with the power they are allowed
		}
	}
	return uint32(c + 0.5), uint32(u + 0.5)
}

// gpuState is the integrated state of one GPU on the step grid: it is valid
// at scenario time step*stepNs.
type gpuState struct {
	step     int64
	energyMJ float64 // the counter (restarts at energy_reset)
	tempC    float64
	epoch    uint32 // energy resets so far
}

// init puts st at the step containing s in thermal steady state with a
// counter that looks like days of uptime.
func (n *node) initState(st *gpuState, g int, s int64) {
	gp := &n.gpus[g]
	st.step = floorDiv(s, stepNs)
	st.tempC = gp.inletC + gp.rCPerW*n.meanDemand(s)*gp.scale
	st.energyMJ = float64(1e9 + hash3(n.hash, uint64(g), 4)%(50e9))
	st.epoch = 0
	for _, r := range gp.resets {
		if r <= s {
			st.energyMJ = 0
			st.epoch++
		}
	}
}

// skipState jumps st forward to step without integrating: the counter grows
// by the mean demand over the gap (unless it was reset in the gap) and the
// temperature is the steady state.
func (n *node) skipState(st *gpuState, g int, step int64) {
	e := st.energyMJ + n.meanDemand(step*stepNs)*n.gpus[g].scale*float64(step-st.step)*stepS*1000
	ep := st.epoch
	n.initState(st, g, step*stepNs)
	if st.epoch == ep {
		st.energyMJ = e
	}
}

// step advances st by one grid step given the node demand at its midpoint
// and returns the energy of the step (mJ) and the reasons in force.
func (n *node) stepGPU(st *gpuState, g int, w float64, act activity) (float64, uint64) {
	gp := &n.gpus[g]
	s := st.step*stepNs + stepNs/2
	if len(gp.resets) > 0 {
		start := st.step * stepNs
		for _, r := range gp.resets {
			if r >= start && r < start+stepNs {
				st.energyMJ = 0
				st.epoch++
			}
		}
	}
	p, reasons := n.power(g, s, w, act, st.tempC)
	e := p * stepS * 1000
	st.energyMJ += e
	st.tempC += (gp.inletC + gp.rCPerW*p - st.tempC) * n.p.k
	st.step++
	return e, reasons
}

// advanceGPU integrates one GPU up to step to (NVML path: demand per GPU).
func (n *node) advanceGPU(st *gpuState, g int, to int64) {
	for st.step < to {
		w, act, _ := n.demand(st.step*stepNs + stepNs/2)
		n.stepGPU(st, g, w, act)
	}
}

// faultAt reports the first fault of kind active for GPU g at s that is
// about field fd or about every field.
func (n *node) faultAt(kind string, g int, fd field, s int64) *fault {
	for i := range n.faults {
		f := &n.faults[i]
		if f.kind == kind && f.active(g, s) && (f.field == fAll || f.field == fd) {
			return f
		}
	}
	return nil
}

// matchSelector implements the Job.Nodes syntax (validated before).
func matchSelector(sel string, loc telemetry.Location) bool {
	if sel == "" || sel == "*" {
		return true
	}
	if !strings.Contains(sel, "=") {
		ok, _ := path.Match(sel, loc.Node)
		return ok
	}
	for _, t := range strings.Split(sel, ",") {
		k, pat, _ := strings.Cut(t, "=")
		var v string
		switch k {
		case "site":
			v = loc.Site
		case "hall":
			v = loc.Hall
		case "row":
			v = loc.Row
		case "rack":
			v = loc.Rack
		case "node":
			v = loc.Node
		}
		if ok, _ := path.Match(pat, v); !ok {
			return false
		}
	}
	return true
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func hash3(a, b, c uint64) uint64 { return mix(mix(a^mix(b)) ^ c) }

// unit maps a hash to [-1, 1).
func unit(h uint64) float64 { return float64(h>>11)/float64(1<<52) - 1 }

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

func sortInt64(a []int64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// hostW is the host's power (everything but the GPUs) when the GPUs draw
// gpuW each on average: idle to max, linear in the GPUs' load.
func (p *params) hostW(gpuW float64) float64 {
	u := 0.0
	if p.tdpW > p.idleW {
		u = min(max((gpuW-p.idleW)/(p.tdpW-p.idleW), 0), 1)
	}
	return p.hostIdleW + u*(p.hostMaxW-p.hostIdleW)
}

// nodePowerAt is the whole node's power at scenario time s, as a BMC reads
// it: every GPU's power (at its steady-state temperature; lost GPUs still
// draw) plus the host's.
func (n *node) nodePowerAt(s int64) float64 {
	dw, act, _ := n.demand(s)
	md := n.meanDemand(s)
	sum := 0.0
	for g := range gpusPerNode {
		gp := &n.gpus[g]
		p, _ := n.power(g, s, dw, act, gp.inletC+gp.rCPerW*md*gp.scale)
		sum += p
	}
	return sum + n.p.hostW(sum/gpusPerNode)
}

// fillNodePower sets (or clears) all of dst's node-power fields as the
// node's collector would send them (Config.NodePower): redfish, the BMC's
// mean over the window of every GPU's and the host's power; model, the
// collector's estimate from the GPUs dst reports; none, absent.
func (n *node) fillNodePower(dst *telemetry.NodeReport, w *winAcc, secs float64) {
	dst.CpuPowerMw, dst.NodeEnergyMj = nil, nil
	dst.NodePowerSource = telemetry.NodePowerSource_NODE_POWER_NONE
	ok, mw := false, uint32(0)
	switch n.nodePower {
	case NodePowerRedfish, NodePowerHwmon:
		if secs > 0 {
			gpu := 0.0
			for g := range gpusPerNode {
				gpu += w.energy[g] / 1000 / secs
			}
			ok, mw = true, telemetry.WToMilliwatts(gpu+n.p.hostW(gpu/gpusPerNode))
			dst.NodePowerSource = telemetry.NodePowerSource_NODE_POWER_REDFISH
			if n.nodePower == NodePowerHwmon {
				dst.NodePowerSource = telemetry.NodePowerSource_NODE_POWER_HWMON
			}
		}
	case NodePowerModel:
		g := nodepower.GPUs{Count: len(dst.Gpus), AllOK: len(dst.Gpus) > 0, ModelID: n.p.spec.name}
		for _, gpu := range dst.Gpus {
			if gpu.Health == telemetry.Health_HEALTH_OK && gpu.PowerMw != nil {
				g.SumMW += uint64(*gpu.PowerMw)
			} else {
				g.AllOK = false
			}
		}
		if mw, ok = n.p.estimate.Estimate(g); ok {
			dst.NodePowerSource = telemetry.NodePowerSource_NODE_POWER_MODEL
		}
	}
	optU32(&dst.NodePowerMw, ok, mw)
}

// bmcAverageNs is the span the simulated BMC averages its reading over
// (BMCs report a short average, not an instant).
const bmcAverageNs = int64(time.Second)

// simBMC is the simulated node's BMC (or its in-band ACPI power meter,
// kind HWMON): it reads the node's whole power, averaged over the last
// second.
type simBMC struct {
	n     *node
	clock func() time.Time
	kind  telemetry.NodePowerSource
}

func (b *simBMC) Name() string { return "sim" }
func (b *simBMC) Kind() telemetry.NodePowerSource {
	return b.kind
}
func (b *simBMC) Read(context.Context) (nodepower.Sample, error) {
	s := b.n.p.scenarioNs(b.clock())
	const k = 10
	w := 0.0
	for i := range int64(k) {
		w += b.n.nodePowerAt(s - bmcAverageNs + (2*i+1)*bmcAverageNs/(2*k))
	}
	return nodepower.Sample{PowerW: w / k}, nil
}

// NodePowerSource is the simulated BMC when the node's node power is
// redfish, its ACPI power meter (kind HWMON, the same reading) when hwmon
// (false otherwise): `collector --sim` polls it before the collector's own
// node_power sources.
func (d *Driver) NodePowerSource() (nodepower.Source, bool) {
	switch d.n.nodePower {
	case NodePowerRedfish:
		return &simBMC{n: d.n, clock: d.clock, kind: telemetry.NodePowerSource_NODE_POWER_REDFISH}, true
	case NodePowerHwmon:
		return &simBMC{n: d.n, clock: d.clock, kind: telemetry.NodePowerSource_NODE_POWER_HWMON}, true
	}
	return nil, false
}
