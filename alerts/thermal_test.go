package alerts

import (
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/testenv"
)

// One row runs hot: its GPUs pass the thermal slowdown temperature and
// report thermal clock events; the shipped row_thermal_throttling rule (with
// a shorter `for`) fires for that row only, and the row's rollup counts the
// throttled GPUs and the hottest GPU.
func TestScenarioRowThermalThrottling(t *testing.T) {
	testenv.Short(t)
	var rule rules.Rule
	for _, r := range DefaultRules() {
		if r.Name == "row_thermal_throttling" {
			rule = r
		}
	}
	rule.For = 5 * time.Second
	w := newWorld(t, []sim.Job{{Name: "hot", Nodes: "hall=h1,row=r1", Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.98, CommFrac: 0.98}},
		[]rules.Rule{rule}, func(c *sim.Config) { c.SlowdownC, c.ThermalTau, c.Variation = 45, 2*time.Second, 0 })
	w.startEngine()
	var fired []string
	for win := 1; win <= 20; win++ {
		for _, a := range w.window(win) {
			if a.Firing() {
				fired = append(fired, a.Domain)
				if a.Value < 8 || a.Annotations["summary"] == "" {
					t.Errorf("alert %+v", a)
				}
			}
		}
	}
	if len(fired) != 1 || fired[0] != "dc1/h1/r1" {
		t.Fatalf("thermal alerts for %v, want dc1/h1/r1 only", fired)
	}
	for _, h := range w.eng.Snapshot().Halls {
		if h.Key == "dc1/h1" && (h.ThrottledGPUs != 800 || h.GPUTempMaxC <= 45) {
			t.Errorf("hall h1: %d throttled GPUs, max %v °C; want the 800 GPUs of row r1 above 45 °C", h.ThrottledGPUs, h.GPUTempMaxC)
		}
	}
}
