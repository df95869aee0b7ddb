package collector

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// constLib is an 8-GPU driver whose every call returns a constant at once,
// so that a benchmark measures the collector, not a simulator or a mock
// that records its calls.
type constLib struct {
	nvml.Interface
	devs []nvml.Device
}

func (l *constLib) DeviceGetCount() (int, nvml.Return) { return len(l.devs), nvml.SUCCESS }
func (l *constLib) DeviceGetHandleByIndex(i int) (nvml.Device, nvml.Return) {
	return l.devs[i], nvml.SUCCESS
}

type constDev struct {
	nvml.Device
	i      int
	energy uint64
}

func (d *constDev) GetUUID() (string, nvml.Return) {
	return "GPU-3f1c2a7e-9b4d-4e21-8c5a-00000000000" + string(rune('0'+d.i)), nvml.SUCCESS
}
func (d *constDev) GetName() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS }
func (d *constDev) GetFieldValues(v []nvml.FieldValue) nvml.Return {
	for k := range v {
		v[k].NvmlReturn = uint32(nvml.SUCCESS)
		v[k].ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
		binary.LittleEndian.PutUint32(v[k].Value[:], 650_000+uint32(d.i)*1000)
	}
	return nvml.SUCCESS
}
func (d *constDev) GetPowerUsage() (uint32, nvml.Return) { return 650_000, nvml.SUCCESS }
func (d *constDev) GetTotalEnergyConsumption() (uint64, nvml.Return) {
	d.energy += 650_000
	return d.energy, nvml.SUCCESS
}
func (d *constDev) GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return) {
	return 62, nvml.SUCCESS
}
func (d *constDev) GetEnforcedPowerLimit() (uint32, nvml.Return)        { return 700_000, nvml.SUCCESS }
func (d *constDev) GetClockInfo(nvml.ClockType) (uint32, nvml.Return)   { return 1980, nvml.SUCCESS }
func (d *constDev) GetCurrentClocksEventReasons() (uint64, nvml.Return) { return 0, nvml.SUCCESS }
func (d *constDev) GetUtilizationRates() (nvml.Utilization, nvml.Return) {
	return nvml.Utilization{Gpu: 98}, nvml.SUCCESS
}

func newConstLib() *constLib {
	l := &constLib{}
	for i := range 8 {
		l.devs = append(l.devs, &constDev{i: i})
	}
	return l
}

// BenchmarkWindow is the collector's own work for one 1 s window of an
// 8-GPU node: 10 slot samplings of 8 GPUs (the NVML calls return
// constants), the window summary and the protobuf encoding. At 1 window/s
// the result in ns/window is also the CPU ns per second of collection.
func BenchmarkWindow(b *testing.B) {
	cfg := testConfig()
	m := newMetrics(nil, testLoc.Node)
	gpus, err := openGPUs(newConstLib(), m)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0).UnixNano()
	for _, g := range gpus {
		g.now = func() time.Time { return time.Unix(0, now) }
	}
	subject, _ := telemetry.PowerSubject(testLoc)
	var bytes int
	s := newSampler(cfg, testLoc, subject, gpus, 42, m, slog.New(slog.DiscardHandler), func(e entry) { bytes = len(e.data) })
	step := func() {
		s.tick(now)
		for i := range s.gpus {
			select {
			case req := <-s.reqs[i]:
				s.accept(s.gpus[i].read(req))
			default:
			}
		}
	}
	now = (now/s.window + 1) * s.window
	step()
	for range 2 * s.slots { // past the first (inventory) report
		now += s.slot
		step()
	}
	b.ReportAllocs()
	for b.Loop() {
		for range s.slots {
			now += s.slot
			step()
		}
	}
	b.ReportMetric(float64(bytes), "bytes/report")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6/1e3*100, "%core@1Hz")
}
