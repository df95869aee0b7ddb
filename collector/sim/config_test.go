package sim

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/config"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestExampleFile keeps testdata/sim.yaml, the documented example, equal to
// DefaultConfig.
func TestExampleFile(t *testing.T) {
	var got Config
	if err := config.Load("testdata/sim.yaml", &got); err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("testdata/sim.yaml differs from DefaultConfig:\n got %+v\nwant %+v", got, want)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Model = "dgxz900"
	cfg.Noise = 2
	cfg.ThermalTau = 0
	cfg.Jobs = append(cfg.Jobs,
		Job{Nodes: "hall=[", Period: 0, Duty: 0, ComputeFrac: 2, CommFrac: -1, Start: 10 * time.Second, Stop: 5 * time.Second},
		Job{Nodes: "colour=red", Period: time.Second, Duty: 0.5, ComputeFrac: 0.9, CheckpointEvery: time.Minute, CheckpointFor: 2 * time.Minute},
	)
	cfg.Faults = []Fault{
		{Kind: "boom", GPU: -1},
		{Kind: FaultLost, GPU: 9, Until: -time.Second},
		{Kind: FaultNotSupported, GPU: -1},
		{Kind: FaultNotSupported, GPU: -1, Field: "voltage"},
		{Kind: FaultNoise, GPU: 0},
		{Kind: FaultLost, GPU: 0, Hang: time.Second},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, key := range []string{
		"sim.model:", "sim.noise:", "sim.thermal_tau:",
		"sim.jobs[1].nodes:", "sim.jobs[1].period: must be 0.5s..10s", "sim.jobs[1].duty:",
		"sim.jobs[1].compute_frac:", "sim.jobs[1].comm_frac:", "sim.jobs[1].stop:",
		"sim.jobs[2].nodes:", "sim.jobs[2].checkpoint_for:",
		"sim.faults[0].kind:", "sim.faults[1].gpu:", "sim.faults[1].until:",
		"sim.faults[2].field:", "sim.faults[3].field:", "sim.faults[4].noise:", "sim.faults[5].hang:",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error lacks %q:\n%v", key, err)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 18 {
		t.Errorf("got %d problems, want 18:\n%v", n, err)
	}
}

func TestFaultYAML(t *testing.T) {
	f := func(in string, want Fault, wantErr string) {
		t.Helper()
		cfg := DefaultConfig()
		err := config.Decode([]byte(in), "test.yaml", &cfg)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Fatalf("%q: err %v, want %q", in, err, wantErr)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if len(cfg.Faults) != 1 || cfg.Faults[0] != want {
			t.Fatalf("%q: got %+v, want %+v", in, cfg.Faults, want)
		}
	}
	f("faults: [{node: n1, kind: lost}]", Fault{Node: "n1", Kind: FaultLost, GPU: -1}, "")
	f("faults: [{kind: hang, gpu: 3, field: energy, from: 10s, until: 1m, hang: 2s}]",
		Fault{Kind: FaultHang, GPU: 3, Field: FieldEnergy, From: 10 * time.Second, Until: time.Minute, Hang: 2 * time.Second}, "")
	f("faults: [{kind: lost, colour: red}]", Fault{}, "colour")
	f("faults: [lost]", Fault{}, "mapping")
	f("jobs: [{name: a, bogus: 1}]", Fault{}, "bogus")
}

func TestSelector(t *testing.T) {
	loc := testLoc // dc1/h1/r01/k01/gpu-h1-k01-n01
	f := func(sel string, want bool) {
		t.Helper()
		if err := checkSelector(sel); err != nil {
			t.Fatalf("%q: %v", sel, err)
		}
		if got := matchSelector(sel, loc); got != want {
			t.Errorf("%q: got %v, want %v", sel, got, want)
		}
	}
	f("", true)
	f("*", true)
	f("gpu-h1-k01-*", true)
	f("gpu-h2-*", false)
	f("hall=h1", true)
	f("hall=h2", false)
	f("hall=h1,rack=k0[1-3]", true)
	f("hall=h1,rack=k0[2-3]", false)
	f("site=dc1,node=*-n01", true)
}
