package sim

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// A row whose collectors stop and a silent meter are faults of the
// simulator's config; the nodes behind a stopped collector still draw the
// same power.
func TestFacilityFaults(t *testing.T) {
	epoch := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	var cfg Config
	doc := `
model: dgxh100
epoch: 2026-11-27T00:00:00Z
faults:
  - {kind: collector_down, node: "hall=h1,row=r03", from: 60s, until: 120s}
  - {kind: meter_silent, meter: "pdu-h1-r02-*", from: 30s}
`
	cfg = DefaultConfig()
	if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	down := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r03", Rack: "rk01", Node: "gpu-h1-r03-rk01-n01"}
	up := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r02", Rack: "rk01", Node: "gpu-h1-r02-rk01-n01"}
	at := func(d time.Duration) time.Time { return epoch.Add(d) }
	for _, c := range []struct {
		end  time.Duration
		want bool
	}{{60 * time.Second, false}, {61 * time.Second, true}, {120 * time.Second, true}, {121 * time.Second, false}} {
		if got := cfg.CollectorDown(down, at(c.end)); got != c.want {
			t.Errorf("CollectorDown(r03, window ending %v) = %v, want %v", c.end, got, c.want)
		}
		if cfg.CollectorDown(up, at(c.end)) {
			t.Errorf("row r02's collector down at %v", c.end)
		}
	}
	if cfg.MeterSilent("pdu-h1-r02-rk01-a", at(30*time.Second)) || !cfg.MeterSilent("pdu-h1-r02-rk01-a", at(31*time.Second)) ||
		!cfg.MeterSilent("pdu-h1-r02-rk01-b", at(time.Hour)) || cfg.MeterSilent("pdu-h1-r03-rk01-a", at(time.Hour)) {
		t.Error("MeterSilent wrong")
	}

	// The fleet says which reports to drop; the nodes' power is unchanged.
	clean := cfg
	clean.Faults = nil
	locs := []telemetry.Location{down, up}
	f, err := NewFleet(cfg, locs)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewFleet(clean, locs)
	if err != nil {
		t.Fatal(err)
	}
	var a, b telemetry.NodeReport
	for s := 55; s <= 65; s++ {
		end := at(time.Duration(s) * time.Second)
		for i := range locs {
			f.Report(&a, i, end, time.Second, 100*time.Millisecond)
			g.Report(&b, i, end, time.Second, 100*time.Millisecond)
			if a.GetNodePowerMw() != b.GetNodePowerMw() || a.GetNodePowerMw() == 0 {
				t.Fatalf("node %d at %v: node power %d with the faults, %d without", i, end, a.GetNodePowerMw(), b.GetNodePowerMw())
			}
		}
		if f.CollectorDown(0, end) != (s > 60) || f.CollectorDown(1, end) {
			t.Errorf("Fleet.CollectorDown at %ds", s)
		}
	}
	if f.Location(1) != up {
		t.Errorf("Location(1) = %v", f.Location(1))
	}
}

func TestFacilityFaultValidation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Faults = []Fault{
		{Kind: FaultMeterSilent, GPU: -1},
		{Kind: FaultMeterSilent, GPU: 2, Meter: "[", Node: "x"},
		{Kind: FaultCollectorDown, GPU: -1},
		{Kind: FaultLost, GPU: -1, Meter: "pdu"},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"sim.faults[0].meter: required for meter_silent",
		"sim.faults[1].gpu: not for meter_silent", "sim.faults[1].meter: pattern", "sim.faults[1].node: not for meter_silent",
		"sim.faults[2].node: required for collector_down",
		"sim.faults[3].meter: only for meter_silent",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}
