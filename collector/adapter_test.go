package collector

import (
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/megawatch/megawatch/internal/telemetry"
)

func testConfig() Config {
	c := DefaultConfig()
	c.Node = testLoc.Node
	return c
}

// nodeW is the node power of the GPUs in `in` (watts, rounded like the wire).
func nodeW(in ...int) uint32 {
	var mw uint32
	for _, i := range in {
		mw += gpuPowerMW(i)
	}
	return (mw + 500) / 1000
}

func allGPUs() []int { return []int{0, 1, 2, 3, 4, 5, 6, 7} }

func except(skip int) []int {
	var out []int
	for _, i := range allGPUs() {
		if i != skip {
			out = append(out, i)
		}
	}
	return out
}

func checkSlots(t *testing.T, r *telemetry.NodeReport, want uint32, mask uint32) {
	t.Helper()
	if r.SlotMissingMask != mask {
		t.Errorf("seq %d: slot_missing_mask = %b, want %b", r.Seq, r.SlotMissingMask, mask)
	}
	if len(r.SlotPowerW) != 10 {
		t.Fatalf("seq %d: %d slots, want 10", r.Seq, len(r.SlotPowerW))
	}
	for k, v := range r.SlotPowerW {
		if v != want {
			t.Errorf("seq %d: slot %d = %d W, want %d W (slots %v)", r.Seq, k, v, want, r.SlotPowerW)
			return
		}
	}
}

// checkHealthy asserts a GPU's complete, correct window.
func checkHealthy(t *testing.T, r *telemetry.NodeReport, i int) {
	t.Helper()
	g := r.Gpus[i]
	p := gpuPowerMW(i)
	switch {
	case g.Index != uint32(i) || g.Health != telemetry.Health_HEALTH_OK || g.Error != "":
		t.Errorf("seq %d gpu %d: index %d health %v error %q", r.Seq, i, g.Index, g.Health, g.Error)
	case g.PowerMw == nil || *g.PowerMw != p:
		t.Errorf("seq %d gpu %d: power_mw %v, want %d", r.Seq, i, g.PowerMw, p)
	case g.PowerMinMw == nil || *g.PowerMinMw != p || g.PowerMaxMw == nil || *g.PowerMaxMw != p:
		t.Errorf("seq %d gpu %d: min/max %v/%v, want %d", r.Seq, i, g.PowerMinMw, g.PowerMaxMw, p)
	case g.EnergyMj == nil || g.TempC == nil || *g.TempC != int32(60+i) || g.MemTempC == nil || *g.MemTempC != 70:
		t.Errorf("seq %d gpu %d: energy %v temp %v mem temp %v", r.Seq, i, g.EnergyMj, g.TempC, g.MemTempC)
	case g.PowerLimitMw == nil || *g.PowerLimitMw != 700_000 || g.SmClockMhz == nil || *g.SmClockMhz != 1980 ||
		g.UtilPct == nil || *g.UtilPct != 97 || g.ThrottleReasons == nil:
		t.Errorf("seq %d gpu %d: limit %v clock %v util %v throttle %v", r.Seq, i, g.PowerLimitMw, g.SmClockMhz, g.UtilPct, g.ThrottleReasons)
	}
}

func TestAdapterHealthyNode(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	h, _ = newSyncHarness(t, testConfig(), dev)
	h.windows(61)
	if len(h.reports) != 61 {
		t.Fatalf("%d reports, want 61", len(h.reports))
	}
	for n, r := range h.reports {
		if r.Seq != uint64(n+1) || r.BootId != 42 || r.WindowMs != 1000 || r.SlotMs != 100 {
			t.Fatalf("report %d: seq %d boot %d window %d slot %d", n, r.Seq, r.BootId, r.WindowMs, r.SlotMs)
		}
		if r.WindowEndUnixNs%int64(time.Second) != 0 || telemetry.ReportLocation(r) != testLoc {
			t.Fatalf("report %d: window end %d location %v", n, r.WindowEndUnixNs, telemetry.ReportLocation(r))
		}
		if n > 0 && r.WindowEndUnixNs != h.reports[n-1].WindowEndUnixNs+int64(time.Second) {
			t.Fatalf("report %d: windows not consecutive", n)
		}
		checkSlots(t, r, nodeW(allGPUs()...), 0)
		for i := range 8 {
			checkHealthy(t, r, i)
		}
		inventory := n == 0 || n == 60
		if got := r.Gpus[0].Uuid != "" && r.Gpus[0].Model != ""; got != inventory {
			t.Errorf("report seq %d: inventory %v, want %v", r.Seq, got, inventory)
		}
	}
	if m := h.reports[0].Gpus[0].Model; m != "NVIDIA H100 80GB HBM3" {
		t.Logf("model %q", m)
	}
}

func TestAdapterNotSupported(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	for i := range 8 {
		dev.set(i, mPowerField, nvml.ERROR_NOT_SUPPORTED) // old driver: fall back to GetPowerUsage
	}
	dev.set(2, mEnergy, nvml.ERROR_NOT_SUPPORTED)
	dev.set(2, mMemTemp, nvml.ERROR_NOT_SUPPORTED)
	dev.set(2, mUtil, nvml.ERROR_NOT_SUPPORTED)
	dev.set(2, mThrottle, nvml.ERROR_NOT_SUPPORTED)
	h, _ = newSyncHarness(t, testConfig(), dev)
	h.windows(3)
	for _, r := range h.reports {
		var want uint32
		for i := range 8 {
			want += gpuPowerMW(i) + 1
		}
		checkSlots(t, r, (want+500)/1000, 0)
		g := r.Gpus[2]
		if g.Health != telemetry.Health_HEALTH_OK {
			t.Fatalf("NOT_SUPPORTED made gpu 2 %v", g.Health)
		}
		if g.EnergyMj != nil || g.MemTempC != nil || g.UtilPct != nil || g.ThrottleReasons != nil {
			t.Errorf("unsupported fields must be absent, never 0: %v", g)
		}
		if g.PowerMw == nil || *g.PowerMw != gpuPowerMW(2)+1 || g.TempC == nil || g.SmClockMhz == nil {
			t.Errorf("gpu 2 lost supported fields: %v", g)
		}
		// The others: instants from GetPowerUsage, mean from the energy counter.
		if p := r.Gpus[5].PowerMinMw; p == nil || *p != gpuPowerMW(5)+1 {
			t.Errorf("gpu 5 did not fall back to GetPowerUsage: %v", r.Gpus[5])
		}
	}
	if p := h.reports[2].Gpus[5].PowerMw; p == nil || *p != gpuPowerMW(5) {
		t.Errorf("gpu 5 mean power %v, want the energy-derived %d", p, gpuPowerMW(5))
	}
}

func TestAdapterGPULost(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	h, m := newSyncHarness(t, testConfig(), dev)
	h.windows(1)
	for _, c := range []int{mPowerField, mPowerUsage, mEnergy, mTemp, mMemTemp, mLimit, mClock, mUtil, mThrottle} {
		dev.set(5, c, nvml.ERROR_GPU_IS_LOST)
	}
	h.windows(2)
	for _, r := range h.reports[1:] {
		g := r.Gpus[5]
		if g.Health != telemetry.Health_HEALTH_LOST || g.Error == "" || g.PowerMw != nil || g.TempC != nil {
			t.Errorf("lost GPU reported as %v", g)
		}
		checkSlots(t, r, nodeW(except(5)...), 0) // left out of the sum, not counted as 0 W
		for _, i := range except(5) {
			checkHealthy(t, r, i)
		}
	}
	if got := counterValue(t, m.nvmlErrors.WithLabelValues("5", "lost")); got < 2 {
		t.Errorf("lost errors counted %v, want >= 2", got)
	}
}

func TestAdapterHungCall(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	h, m := newSyncHarness(t, testConfig(), dev)
	h.windows(1)
	h.held[3] = true // GPU 3's next call never returns
	h.windows(4)
	h.release(3)
	h.windows(3)
	if len(h.reports) != 8 {
		t.Fatalf("%d reports, want 8: the other GPUs must keep reporting", len(h.reports))
	}
	for n, r := range h.reports {
		g := r.Gpus[3]
		switch {
		case n == 0 || n >= 6:
			checkHealthy(t, r, 3)
		case n >= 1 && n <= 4:
			if g.Health != telemetry.Health_HEALTH_TIMEOUT || g.PowerMw != nil {
				t.Errorf("report %d: hung GPU reported %v", n, g)
			}
			checkSlots(t, r, nodeW(except(3)...), 0)
		}
		for _, i := range except(3) {
			checkHealthy(t, r, i)
		}
	}
	if got := counterValue(t, m.nvmlErrors.WithLabelValues("3", "timeout")); got < 4 {
		t.Errorf("timeouts counted %v, want >= 4", got)
	}
}

func TestAdapterEnergyReset(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	h, _ = newSyncHarness(t, testConfig(), dev)
	h.windows(2)
	dev.energyBase[1].Store(h.clock().UnixMilli() - 100) // driver reload: counter restarts near 0
	h.windows(2)
	r := h.reports
	if r[1].Gpus[1].EnergyEpoch != 0 || r[2].Gpus[1].EnergyEpoch != 1 || r[3].Gpus[1].EnergyEpoch != 1 {
		t.Errorf("epochs %d %d %d, want 0 1 1", r[1].Gpus[1].EnergyEpoch, r[2].Gpus[1].EnergyEpoch, r[3].Gpus[1].EnergyEpoch)
	}
	for _, rep := range r {
		checkHealthy(t, rep, 1) // mean power stays right: instants in the reset window, delta after
	}
	if r[2].Gpus[0].EnergyEpoch != 0 {
		t.Error("another GPU's epoch moved")
	}
}

func TestAdapterPowerErrorIsHealthError(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	dev.set(6, mPowerField, nvml.ERROR_UNKNOWN)
	h, m := newSyncHarness(t, testConfig(), dev)
	h.windows(2)
	for _, r := range h.reports {
		if g := r.Gpus[6]; g.Health != telemetry.Health_HEALTH_ERROR || g.Error == "" || g.PowerMw != nil {
			t.Errorf("gpu 6: %v", g)
		}
		checkSlots(t, r, nodeW(except(6)...), 0)
	}
	if got := counterValue(t, m.nvmlErrors.WithLabelValues("6", "error")); got < 20 {
		t.Errorf("errors counted %v, want >= 20", got)
	}
}

func TestAdapterAllGPUsHungSetsMissingSlots(t *testing.T) {
	var h *syncHarness
	dev := newMockNode(func() time.Time { return h.clock() })
	h, _ = newSyncHarness(t, testConfig(), dev)
	h.windows(1)
	for i := range 8 {
		h.held[i] = true
	}
	h.windows(2)
	r := h.reports[len(h.reports)-1]
	if r.SlotMissingMask != 1<<10-1 {
		t.Errorf("slot_missing_mask = %b, want all 10 bits", r.SlotMissingMask)
	}
	for _, g := range r.Gpus {
		if g.Health != telemetry.Health_HEALTH_TIMEOUT {
			t.Errorf("gpu %d: %v", g.Index, g.Health)
		}
	}
}
