package collector

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
)

var testLoc = telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "rk01", Node: "gpu-h1-r01-rk01-n01"}

// gpuPowerMW is mock GPU i's constant power: 600 W + 10 W per index.
func gpuPowerMW(i int) uint32 { return 600_000 + uint32(i)*10_000 }

// mockNode is a DGX H100 from go-nvml's mock with the telemetry calls
// wired to constants (power) and a clock (energy = power × time). Each
// GPU's behaviour can be changed per call kind with a Return override.
type mockNode struct {
	*server.Server
	clock func() time.Time
	mu    sync.Mutex
	fail  map[[2]int]nvml.Return // (gpu, call) → forced return
	hang  [8]chan struct{}       // non-nil: power reads of that GPU block on it
	// energyBase is subtracted (a counter reset) when set per GPU.
	energyBase [8]atomic.Int64
	// powerCalls counts power-instant reads per GPU.
	powerCalls [8]atomic.Int64
}

const (
	mPowerField = iota
	mPowerUsage
	mEnergy
	mTemp
	mMemTemp
	mLimit
	mClock
	mUtil
	mThrottle
)

func newMockNode(clock func() time.Time) *mockNode {
	n := &mockNode{Server: dgxh100.New(), clock: clock, fail: map[[2]int]nvml.Return{}}
	for i, d := range n.Devices {
		n.wire(i, d.(*server.Device))
	}
	return n
}

func (n *mockNode) set(gpu, call int, ret nvml.Return) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ret == nvml.SUCCESS {
		delete(n.fail, [2]int{gpu, call})
		return
	}
	n.fail[[2]int{gpu, call}] = ret
}

func (n *mockNode) ret(gpu, call int) nvml.Return {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r, ok := n.fail[[2]int{gpu, call}]; ok {
		return r
	}
	return nvml.SUCCESS
}

func (n *mockNode) hangCh(gpu int) chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hang[gpu]
}

func (n *mockNode) wire(i int, d *server.Device) {
	d.GetFieldValuesFunc = func(v []nvml.FieldValue) nvml.Return {
		for k := range v {
			f := &v[k]
			var call int
			var val uint32
			switch f.FieldId {
			case nvml.FI_DEV_POWER_INSTANT:
				n.powerCalls[i].Add(1)
				if ch := n.hangCh(i); ch != nil {
					<-ch
				}
				call, val = mPowerField, gpuPowerMW(i)
			case nvml.FI_DEV_MEMORY_TEMP:
				call, val = mMemTemp, 70
			default:
				f.NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
				continue
			}
			if r := n.ret(i, call); r != nvml.SUCCESS {
				if r == nvml.ERROR_GPU_IS_LOST {
					return r
				}
				f.NvmlReturn = uint32(r)
				continue
			}
			f.NvmlReturn = uint32(nvml.SUCCESS)
			f.ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
			binary.LittleEndian.PutUint32(f.Value[:], val)
		}
		return nvml.SUCCESS
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) {
		if r := n.ret(i, mPowerUsage); r != nvml.SUCCESS {
			return 0, r
		}
		return gpuPowerMW(i) + 1, nvml.SUCCESS // +1 mW tells the fallback apart
	}
	d.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) {
		if r := n.ret(i, mEnergy); r != nvml.SUCCESS {
			return 0, r
		}
		ms := n.clock().UnixMilli() - n.energyBase[i].Load()
		return uint64(ms) * uint64(gpuPowerMW(i)) / 1000, nvml.SUCCESS // mJ = W × ms
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) {
		return 60 + uint32(i), n.ret(i, mTemp)
	}
	d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) { return 700_000, n.ret(i, mLimit) }
	d.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return 1980, n.ret(i, mClock) }
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: 97, Memory: 40}, n.ret(i, mUtil)
	}
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0, n.ret(i, mThrottle) }
}

// syncHarness drives a sampler on a virtual clock, serving the GPU requests
// in the test goroutine. A held GPU keeps its request unserved: to the
// sampler it is a call that hangs.
type syncHarness struct {
	t       *testing.T
	s       *sampler
	now     int64 // virtual Unix ns
	held    map[int]bool
	reports []*telemetry.NodeReport
}

func newSyncHarness(t *testing.T, cfg Config, dev nvml.Interface) (*syncHarness, *metrics) {
	t.Helper()
	h := &syncHarness{t: t, held: map[int]bool{}, now: time.Unix(1_800_000_000, 0).UnixNano()}
	m := newMetrics(nil, testLoc.Node)
	gpus, err := openGPUs(dev, m)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gpus {
		g.now = h.clock
	}
	subject, _ := telemetry.PowerSubject(testLoc)
	h.s = newSampler(cfg, testLoc, subject, gpus, 42, m, slog.New(slog.DiscardHandler), func(e entry) {
		var r telemetry.NodeReport
		if err := proto.Unmarshal(e.data, &r); err != nil {
			t.Fatalf("report does not decode: %v", err)
		}
		if want := telemetry.MsgID(r.Node, r.WindowEndUnixNs); e.msgID != want {
			t.Fatalf("msg id %q, want %q", e.msgID, want)
		}
		h.reports = append(h.reports, &r)
	})
	return h, m
}

func (h *syncHarness) clock() time.Time { return time.Unix(0, h.now) }

// windows runs n whole windows after the priming boundary.
func (h *syncHarness) windows(n int) {
	s := h.s
	if !s.started {
		h.now = (h.now/s.window + 1) * s.window
		h.step()
	}
	for range n * s.slots {
		h.now += s.slot
		h.step()
	}
}

func (h *syncHarness) step() {
	h.s.tick(h.now)
	for i := range h.s.gpus {
		if h.held[i] {
			continue
		}
		select {
		case req := <-h.s.reqs[i]:
			h.s.accept(h.s.gpus[i].read(req))
		default:
		}
	}
}

// release serves a held GPU's request (the hung call returns).
func (h *syncHarness) release(i int) {
	delete(h.held, i)
	select {
	case req := <-h.s.reqs[i]:
		h.s.accept(h.s.gpus[i].read(req))
	default:
	}
}

func counterValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}
