package sim

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxb200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// Driver is the simulated NVML of one node. It embeds go-nvml's mock server
// (so every method exists) and overrides the calls the collector makes,
// without the mock's call recording, which would grow without bound.
type Driver struct {
	*server.Server
	n       *node
	clock   func() time.Time
	devs    []*Device
	release chan struct{}
	once    sync.Once
}

var (
	_ nvml.Interface = (*Driver)(nil)
	_ nvml.Device    = (*Device)(nil)
)

// New returns the NVML driver of one simulated node (8 GPUs) at loc. clock
// is the time source (time.Now in production, a fake clock in tests); all
// readings are a deterministic function of the config, loc and the clock
// readings. The result is a *Driver.
func New(cfg Config, loc telemetry.Location, clock func() time.Time) (nvml.Interface, error) {
	p, err := newParams(cfg)
	if err != nil {
		return nil, err
	}
	if clock == nil {
		clock = time.Now
	}
	var srv *server.Server
	switch cfg.Model {
	case "dgxb200":
		srv = dgxb200.New()
	default:
		srv = dgxh100.New()
	}
	d := &Driver{Server: srv, n: newNode(p, loc), clock: clock, release: make(chan struct{})}
	s := p.scenarioNs(clock())
	for g, md := range srv.Devices {
		sd := md.(*server.Device)
		sd.UUID = gpuUUID(d.n.hash, g)
		dev := &Device{Device: sd, drv: d, g: g}
		d.n.initState(&dev.st, g, s)
		dev.recordSlot()
		d.devs = append(d.devs, dev)
	}
	return d, nil
}

// ReleaseHangs unblocks every call hung by a hang fault with hang: 0, now and
// in the future. Shutdown also releases them.
func (d *Driver) ReleaseHangs() { d.once.Do(func() { close(d.release) }) }

// Init implements nvml.Interface.
func (d *Driver) Init() nvml.Return { return nvml.SUCCESS }

// Shutdown implements nvml.Interface; it releases hung calls.
func (d *Driver) Shutdown() nvml.Return { d.ReleaseHangs(); return nvml.SUCCESS }

// DeviceGetCount implements nvml.Interface.
func (d *Driver) DeviceGetCount() (int, nvml.Return) { return len(d.devs), nvml.SUCCESS }

// DeviceGetHandleByIndex implements nvml.Interface. Handles are returned
// even for lost GPUs; their calls fail.
func (d *Driver) DeviceGetHandleByIndex(i int) (nvml.Device, nvml.Return) {
	if i < 0 || i >= len(d.devs) {
		return nil, nvml.ERROR_INVALID_ARGUMENT
	}
	return d.devs[i], nvml.SUCCESS
}

// DeviceGetHandleByUUID implements nvml.Interface.
func (d *Driver) DeviceGetHandleByUUID(uuid string) (nvml.Device, nvml.Return) {
	for _, dev := range d.devs {
		if dev.UUID == uuid {
			return dev, nvml.SUCCESS
		}
	}
	return nil, nvml.ERROR_NOT_FOUND
}

// ErrorString implements nvml.Interface without the C library.
func (d *Driver) ErrorString(r nvml.Return) string { return r.Error() }

// Library-level forms of the device calls, for callers that use them.

func (d *Driver) DeviceGetPowerUsage(dev nvml.Device) (uint32, nvml.Return) {
	return dev.GetPowerUsage()
}
func (d *Driver) DeviceGetTotalEnergyConsumption(dev nvml.Device) (uint64, nvml.Return) {
	return dev.GetTotalEnergyConsumption()
}
func (d *Driver) DeviceGetTemperature(dev nvml.Device, s nvml.TemperatureSensors) (uint32, nvml.Return) {
	return dev.GetTemperature(s)
}
func (d *Driver) DeviceGetFieldValues(dev nvml.Device, v []nvml.FieldValue) nvml.Return {
	return dev.GetFieldValues(v)
}
func (d *Driver) DeviceGetEnforcedPowerLimit(dev nvml.Device) (uint32, nvml.Return) {
	return dev.GetEnforcedPowerLimit()
}
func (d *Driver) DeviceGetClockInfo(dev nvml.Device, c nvml.ClockType) (uint32, nvml.Return) {
	return dev.GetClockInfo(c)
}
func (d *Driver) DeviceGetUtilizationRates(dev nvml.Device) (nvml.Utilization, nvml.Return) {
	return dev.GetUtilizationRates()
}
func (d *Driver) DeviceGetCurrentClocksEventReasons(dev nvml.Device) (uint64, nvml.Return) {
	return dev.GetCurrentClocksEventReasons()
}
func (d *Driver) DeviceGetCurrentClocksThrottleReasons(dev nvml.Device) (uint64, nvml.Return) {
	return dev.GetCurrentClocksEventReasons()
}
func (d *Driver) DeviceGetUUID(dev nvml.Device) (string, nvml.Return) { return dev.GetUUID() }
func (d *Driver) DeviceGetName(dev nvml.Device) (string, nvml.Return) { return dev.GetName() }
func (d *Driver) DeviceGetIndex(dev nvml.Device) (int, nvml.Return)   { return dev.GetIndex() }

// Device is one simulated GPU. Safe for concurrent calls.
type Device struct {
	*server.Device
	drv *Driver
	g   int

	mu   sync.Mutex
	st   gpuState
	ring [16]slotEnergy // counter at 100 ms boundaries, for GetPowerUsage's 1 s mean
}

type slotEnergy struct {
	slot     int64
	energyMJ float64
	epoch    uint32
	ok       bool
}

// now advances the state to the clock and returns the scenario time.
// Called with mu held.
func (d *Device) now() int64 {
	n := d.drv.n
	s := n.p.scenarioNs(d.drv.clock())
	to := floorDiv(s, stepNs)
	if to < d.st.step { // the clock went back: start again there, counter kept
		e, ep := d.st.energyMJ, d.st.epoch
		n.initState(&d.st, d.g, s)
		d.st.energyMJ, d.st.epoch = e, ep
		d.ring = [16]slotEnergy{}
		d.recordSlot()
		return s
	}
	if (to-d.st.step)*stepNs > maxCatchUpNs { // a long pause: skip it, not integrate it
		n.skipState(&d.st, d.g, to)
		d.ring = [16]slotEnergy{}
		d.recordSlot()
	}
	const slotSteps = noiseSlotNs / stepNs
	for d.st.step < to {
		next := min(to, (floorDiv(d.st.step, slotSteps)+1)*slotSteps)
		n.advanceGPU(&d.st, d.g, next)
		d.recordSlot()
	}
	return s
}

func (d *Device) recordSlot() {
	const slotSteps = noiseSlotNs / stepNs
	if d.st.step%slotSteps != 0 {
		return
	}
	slot := d.st.step / slotSteps
	d.ring[uint64(slot)%uint64(len(d.ring))] = slotEnergy{slot: slot, energyMJ: d.st.energyMJ, epoch: d.st.epoch, ok: true}
}

// gate applies lost and hang faults, then not_supported, for a call that
// reads fd.
func (d *Device) gate(fd field) nvml.Return {
	if r := d.lostOrHang(fd); r != nvml.SUCCESS {
		return r
	}
	if fd != fAll && len(d.drv.n.faults) > 0 &&
		d.drv.n.faultAt(FaultNotSupported, d.g, fd, d.drv.n.p.scenarioNs(d.drv.clock())) != nil {
		return nvml.ERROR_NOT_SUPPORTED
	}
	return nvml.SUCCESS
}

// lostOrHang returns ERROR_GPU_IS_LOST for a lost GPU and blocks (without
// holding mu) when a hang fault covers any of fds.
func (d *Device) lostOrHang(fds ...field) nvml.Return {
	n := d.drv.n
	if len(n.faults) == 0 {
		return nvml.SUCCESS
	}
	s := n.p.scenarioNs(d.drv.clock())
	if n.faultAt(FaultLost, d.g, fAll, s) != nil {
		return nvml.ERROR_GPU_IS_LOST
	}
	for _, fd := range fds {
		if f := n.faultAt(FaultHang, d.g, fd, s); f != nil {
			d.hang(f.hang)
			break
		}
	}
	return nvml.SUCCESS
}

// hang blocks for dur of real time (the collector's deadline is real time),
// or until ReleaseHangs when dur is 0.
func (d *Device) hang(dur time.Duration) {
	if dur <= 0 {
		<-d.drv.release
		return
	}
	t := time.NewTimer(dur)
	defer t.Stop()
	select {
	case <-t.C:
	case <-d.drv.release:
	}
}

// instant is the instantaneous power (W) and throttle reasons now.
// Called with mu held, after now().
func (d *Device) instant(s int64) (float64, uint64, activity, float64, float64) {
	w, act, r := d.drv.n.demand(s)
	p, reasons := d.drv.n.power(d.g, s, w, act, d.st.tempC)
	return p, reasons, act, r, w
}

// energyAt is the counter at s (interpolated within the current step).
func (d *Device) energyAt(s int64) float64 {
	mid := d.st.step*stepNs + stepNs/2
	w, act, _ := d.drv.n.demand(mid)
	p, _ := d.drv.n.power(d.g, mid, w, act, d.st.tempC)
	return d.st.energyMJ + p*float64(s-d.st.step*stepNs)/1e6
}

// GetIndex implements nvml.Device.
func (d *Device) GetIndex() (int, nvml.Return) {
	if r := d.gate(fAll); r != nvml.SUCCESS {
		return 0, r
	}
	return d.g, nvml.SUCCESS
}

// GetUUID implements nvml.Device.
func (d *Device) GetUUID() (string, nvml.Return) {
	if r := d.gate(fAll); r != nvml.SUCCESS {
		return "", r
	}
	return d.UUID, nvml.SUCCESS
}

// GetName implements nvml.Device.
func (d *Device) GetName() (string, nvml.Return) {
	if r := d.gate(fAll); r != nvml.SUCCESS {
		return "", r
	}
	return d.Config.Name, nvml.SUCCESS
}

// GetPowerUsage implements nvml.Device: the mean over the last second (mW),
// as on Ampere and newer.
func (d *Device) GetPowerUsage() (uint32, nvml.Return) {
	if r := d.gate(fPower); r != nvml.SUCCESS {
		return 0, r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.now()
	e := d.energyAt(s)
	slot := floorDiv(s, noiseSlotNs) - 10 // the 100 ms boundary 1.0-1.1 s ago
	if se := d.ring[uint64(slot)%uint64(len(d.ring))]; se.ok && se.slot == slot && se.epoch == d.st.epoch {
		dt := float64(s-slot*noiseSlotNs) / 1e9
		return telemetry.WToMilliwatts((e - se.energyMJ) / 1000 / dt), nvml.SUCCESS
	}
	p, _, _, _, _ := d.instant(s)
	return telemetry.WToMilliwatts(p), nvml.SUCCESS
}

// GetTotalEnergyConsumption implements nvml.Device (mJ).
func (d *Device) GetTotalEnergyConsumption() (uint64, nvml.Return) {
	if r := d.gate(fEnergy); r != nvml.SUCCESS {
		return 0, r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return uint64(d.energyAt(d.now())), nvml.SUCCESS
}

// GetTemperature implements nvml.Device (TEMPERATURE_GPU only).
func (d *Device) GetTemperature(sensor nvml.TemperatureSensors) (uint32, nvml.Return) {
	if sensor != nvml.TEMPERATURE_GPU {
		return 0, nvml.ERROR_INVALID_ARGUMENT
	}
	if r := d.gate(fTemp); r != nvml.SUCCESS {
		return 0, r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.now()
	return uint32(max(0, math.Round(d.st.tempC))), nvml.SUCCESS
}

// GetEnforcedPowerLimit implements nvml.Device (mW).
func (d *Device) GetEnforcedPowerLimit() (uint32, nvml.Return) {
	if r := d.gate(fPowerLimit); r != nvml.SUCCESS {
		return 0, r
	}
	return telemetry.WToMilliwatts(d.drv.n.p.limitW), nvml.SUCCESS
}

// GetPowerManagementLimit implements nvml.Device (mW).
func (d *Device) GetPowerManagementLimit() (uint32, nvml.Return) { return d.GetEnforcedPowerLimit() }

// GetClockInfo implements nvml.Device (CLOCK_SM and CLOCK_GRAPHICS).
func (d *Device) GetClockInfo(c nvml.ClockType) (uint32, nvml.Return) {
	if c != nvml.CLOCK_SM && c != nvml.CLOCK_GRAPHICS {
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	if r := d.gate(fSMClock); r != nvml.SUCCESS {
		return 0, r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.now()
	p, reasons, act, r, w := d.instant(s)
	clock, _ := d.drv.n.clockUtil(act, r, reasons, w*d.drv.n.gpus[d.g].scale, p)
	return clock, nvml.SUCCESS
}

// GetUtilizationRates implements nvml.Device.
func (d *Device) GetUtilizationRates() (nvml.Utilization, nvml.Return) {
	if r := d.gate(fUtil); r != nvml.SUCCESS {
		return nvml.Utilization{}, r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.now()
	p, reasons, act, r, w := d.instant(s)
	_, util := d.drv.n.clockUtil(act, r, reasons, w*d.drv.n.gpus[d.g].scale, p)
	return nvml.Utilization{Gpu: util, Memory: util / 2}, nvml.SUCCESS
}

// GetCurrentClocksEventReasons implements nvml.Device.
func (d *Device) GetCurrentClocksEventReasons() (uint64, nvml.Return) {
	if r := d.gate(fThrottle); r != nvml.SUCCESS {
		return 0, r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, reasons, _, _, _ := d.instant(d.now())
	return reasons, nvml.SUCCESS
}

// GetCurrentClocksThrottleReasons implements nvml.Device (the deprecated name).
func (d *Device) GetCurrentClocksThrottleReasons() (uint64, nvml.Return) {
	return d.GetCurrentClocksEventReasons()
}

// GetFieldValues implements nvml.Device for FI_DEV_POWER_INSTANT (mW),
// FI_DEV_MEMORY_TEMP (°C) and FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ); other
// fields get ERROR_NOT_SUPPORTED in their NvmlReturn.
func (d *Device) GetFieldValues(values []nvml.FieldValue) nvml.Return {
	if len(values) == 0 {
		return nvml.ERROR_INVALID_ARGUMENT
	}
	n := d.drv.n
	var buf [8]field
	fds := buf[:0]
	if len(values) > len(buf) {
		fds = make([]field, 0, len(values))
	}
	for i := range values {
		fd := fieldCount // not simulated
		switch values[i].FieldId {
		case nvml.FI_DEV_POWER_INSTANT:
			fd = fPowerInstant
		case nvml.FI_DEV_MEMORY_TEMP:
			fd = fMemTemp
		case nvml.FI_DEV_TOTAL_ENERGY_CONSUMPTION:
			fd = fEnergy
		}
		fds = append(fds, fd)
	}
	if r := d.lostOrHang(fds...); r != nvml.SUCCESS {
		return r
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.now()
	ts := (s + n.p.epochNs) / 1000
	for i := range values {
		v := &values[i]
		v.Timestamp = ts
		v.Value = [8]byte{}
		fd := fds[i]
		if fd == fieldCount || n.faultAt(FaultNotSupported, d.g, fd, s) != nil {
			v.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
			continue
		}
		v.NvmlReturn = uint32(nvml.SUCCESS)
		switch fd {
		case fPowerInstant:
			p, _, _, _, _ := d.instant(s)
			v.ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
			binary.NativeEndian.PutUint32(v.Value[:], telemetry.WToMilliwatts(p))
		case fMemTemp:
			v.ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
			binary.NativeEndian.PutUint32(v.Value[:], uint32(max(0, math.Round(d.st.tempC+n.p.cfg.MemOffsetC))))
		case fEnergy:
			v.ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_LONG_LONG)
			binary.NativeEndian.PutUint64(v.Value[:], uint64(d.energyAt(s)))
		}
	}
	return nvml.SUCCESS
}

// gpuUUID is a stable UUID for GPU g of a node.
func gpuUUID(nodeHash uint64, g int) string {
	a, b := hash3(nodeHash, uint64(g), 5), hash3(nodeHash, uint64(g), 6)
	return fmt.Sprintf("GPU-%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xffff, a&0xffff, b>>48, b&0xffffffffffff)
}
