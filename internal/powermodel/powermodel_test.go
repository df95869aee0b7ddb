package powermodel

import "testing"

func TestNodeTypesAddUpToTheSpec(t *testing.T) {
	for _, name := range Names() {
		nt, ok := Lookup(name)
		if !ok {
			t.Fatalf("%s listed but not found", name)
		}
		if got := nt.HostW + 8*(nt.PerGPUW+nt.GPUW); got != nt.MaxW {
			t.Errorf("%s: host %g + 8 × (%g + %g) = %g, want the spec's %g", name, nt.HostW, nt.PerGPUW, nt.GPUW, got, nt.MaxW)
		}
	}
	if _, ok := Lookup(Default); !ok {
		t.Fatalf("default %q unknown", Default)
	}
}

func TestMatch(t *testing.T) {
	for gpu, want := range map[string]float64{"NVIDIA H100 80GB HBM3": 387.5, "NVIDIA B200": 600, "NVIDIA H200": 387.5} {
		nt, ok := Match(gpu)
		if !ok || nt.PerGPUW != want {
			t.Errorf("%s: %+v %v", gpu, nt, ok)
		}
	}
	if _, ok := Match("Tesla T4"); ok {
		t.Error("T4 matched")
	}
	if _, ok := Match(""); ok {
		t.Error("empty matched")
	}
}
