package collector

import (
	"context"
	"encoding/binary"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// request asks a GPU worker to read one slot (and the window-end readings
// when end is set). tick is the slot boundary in Unix ns.
type request struct {
	tick int64
	end  bool
}

// optional readings, valid when the matching ok flag is set.
type endReadings struct {
	at                      time.Time
	energyMJ                uint64
	tempC, memTempC         int32
	limitMW, smMHz, utilPct uint32
	energyOK, tempOK, memOK bool
	limitOK, smOK, utilOK   bool
}

// result is what a GPU worker read for one request.
type result struct {
	gpu     int
	req     request
	elapsed time.Duration

	powerMW  uint32
	powerOK  bool
	powerErr nvml.Return // SUCCESS, NOT_SUPPORTED or the failure

	throttle   uint64
	throttleOK bool

	endReadings

	lost    bool   // some call returned GPU_IS_LOST
	errText string // first error other than NOT_SUPPORTED
}

// gpuReader reads one GPU through NVML. It is used by one goroutine only.
type gpuReader struct {
	index    int
	dev      nvml.Device
	uuid     string
	model    string
	useField bool // NVML_FI_DEV_POWER_INSTANT works (until NOT_SUPPORTED)
	fv       [1]nvml.FieldValue
	m        *gpuMetrics
	now      func() time.Time // time.Now; tests drive a virtual clock
}

// run serves requests until ctx ends. Requests are only sent while the
// worker is idle, so a hung NVML call holds back nothing but this GPU.
func (g *gpuReader) run(ctx context.Context, reqs <-chan request, out chan<- result) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-reqs:
			r := g.read(req)
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	}
}

// read performs the NVML calls of one request.
func (g *gpuReader) read(req request) result {
	start := time.Now()
	r := result{gpu: g.index, req: req}
	g.readInto(&r)
	r.elapsed = time.Since(start)
	return r
}

// readInto makes the calls in order and stops at a lost GPU.
func (g *gpuReader) readInto(r *result) {
	r.powerMW, r.powerErr = g.readPower()
	r.powerOK = r.powerErr == nvml.SUCCESS
	if !g.note(r, "power", r.powerErr) {
		return
	}
	if r.powerOK {
		g.m.samples.Inc()
	}
	var ret nvml.Return
	t0 := time.Now()
	r.throttle, ret = g.dev.GetCurrentClocksEventReasons()
	r.throttleOK = ret == nvml.SUCCESS
	if !g.done(r, callThrottle, t0, ret) || !r.req.end {
		return
	}

	e := &r.endReadings
	t0 = time.Now()
	e.at = g.now()
	e.energyMJ, ret = g.dev.GetTotalEnergyConsumption()
	e.energyOK = ret == nvml.SUCCESS
	if !g.done(r, callEnergy, t0, ret) {
		return
	}
	t0 = time.Now()
	temp, ret := g.dev.GetTemperature(nvml.TEMPERATURE_GPU)
	e.tempC, e.tempOK = int32(temp), ret == nvml.SUCCESS
	if !g.done(r, callTemp, t0, ret) {
		return
	}
	t0 = time.Now()
	mem, ret := g.field(nvml.FI_DEV_MEMORY_TEMP)
	e.memTempC, e.memOK = int32(mem), ret == nvml.SUCCESS
	if !g.done(r, callMemTemp, t0, ret) {
		return
	}
	t0 = time.Now()
	e.limitMW, ret = g.dev.GetEnforcedPowerLimit()
	e.limitOK = ret == nvml.SUCCESS
	if !g.done(r, callLimit, t0, ret) {
		return
	}
	t0 = time.Now()
	e.smMHz, ret = g.dev.GetClockInfo(nvml.CLOCK_SM)
	e.smOK = ret == nvml.SUCCESS
	if !g.done(r, callClock, t0, ret) {
		return
	}
	t0 = time.Now()
	u, ret := g.dev.GetUtilizationRates()
	e.utilPct, e.utilOK = u.Gpu, ret == nvml.SUCCESS
	g.done(r, callUtil, t0, ret)
}

// done records one call's latency and outcome; false: stop (GPU lost).
func (g *gpuReader) done(r *result, c int, start time.Time, ret nvml.Return) bool {
	g.m.call(c, start)
	return g.note(r, callNames[c], ret)
}

// note records a call's outcome; it returns false when the GPU is lost and
// no further call should be made.
func (g *gpuReader) note(r *result, what string, ret nvml.Return) bool {
	switch ret {
	case nvml.SUCCESS, nvml.ERROR_NOT_SUPPORTED:
		return true
	case nvml.ERROR_GPU_IS_LOST:
		r.lost = true
		r.errText = what + ": " + ret.Error()
		g.m.errLost.Inc()
		return false
	}
	if r.errText == "" {
		r.errText = what + ": " + ret.Error()
	}
	g.m.errOther.Inc()
	return true
}

// readPower reads instantaneous power (mW): the POWER_INSTANT field while
// the driver supports it, else GetPowerUsage.
func (g *gpuReader) readPower() (uint32, nvml.Return) {
	if g.useField {
		t0 := time.Now()
		v, ret := g.field(nvml.FI_DEV_POWER_INSTANT)
		g.m.call(callPowerInstant, t0)
		switch ret {
		case nvml.SUCCESS:
			return uint32(min(v, math.MaxUint32)), ret
		case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_INVALID_ARGUMENT:
			g.useField = false // older driver or GPU: fall back for good
		default:
			return 0, ret
		}
	}
	t0 := time.Now()
	p, ret := g.dev.GetPowerUsage()
	g.m.call(callPowerUsage, t0)
	return p, ret
}

// field reads one NVML field value as an integer.
func (g *gpuReader) field(id uint32) (uint64, nvml.Return) {
	g.fv[0] = nvml.FieldValue{FieldId: id}
	if ret := g.dev.GetFieldValues(g.fv[:]); ret != nvml.SUCCESS {
		return 0, ret
	}
	f := &g.fv[0]
	if ret := nvml.Return(f.NvmlReturn); ret != nvml.SUCCESS {
		return 0, ret
	}
	return fieldUint(f)
}

// fieldUint decodes a field value (a C union) as a non-negative integer.
func fieldUint(f *nvml.FieldValue) (uint64, nvml.Return) {
	b := f.Value[:]
	switch nvml.ValueType(f.ValueType) {
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return uint64(binary.LittleEndian.Uint32(b)), nvml.SUCCESS
	case nvml.VALUE_TYPE_SIGNED_INT:
		return uint64(max(int32(binary.LittleEndian.Uint32(b)), 0)), nvml.SUCCESS
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return binary.LittleEndian.Uint64(b), nvml.SUCCESS
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return uint64(max(int64(binary.LittleEndian.Uint64(b)), 0)), nvml.SUCCESS
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		return uint64(binary.LittleEndian.Uint16(b)), nvml.SUCCESS
	case nvml.VALUE_TYPE_DOUBLE:
		v := math.Float64frombits(binary.LittleEndian.Uint64(b))
		if !(v >= 0) || v > math.MaxUint32 {
			return 0, nvml.ERROR_UNKNOWN
		}
		return uint64(v + 0.5), nvml.SUCCESS
	}
	return 0, nvml.ERROR_UNKNOWN
}
