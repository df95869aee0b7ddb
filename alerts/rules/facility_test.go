package rules

import (
	"strings"
	"testing"
	"time"
)

func TestPowerKeyValidation(t *testing.T) {
	f := func(r Rule, wantErr string) {
		t.Helper()
		r.Name, r.Level, r.Severity = "r", "hall", "warning"
		if r.Threshold == nil && r.OfCapacity == nil {
			r.Threshold = fp(1)
		}
		err := Validate([]Rule{r}, nil)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%+v: %v", r, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%+v: error %v, want one containing %q", r, err, wantErr)
		}
	}
	for _, m := range []string{MetricPowerMW, MetricPowerMaxMW, MetricHeadroomMW, MetricRampMWPerS, MetricSwingMW} {
		f(Rule{Metric: m, Power: PowerGPU}, "")
		f(Rule{Metric: m, Power: PowerFacility}, "")
		f(Rule{Metric: m, Power: "meter"}, `rules[0] (r): power: want gpu or facility, got "meter"`)
	}
	f(Rule{Metric: MetricOscillationMW, Band: []float64{0.2, 3}, Power: PowerFacility}, "")
	for _, m := range []string{MetricCoverage, MetricUnaccountedMW, MetricUnaccountedRatio, MetricStaleMeters, MetricNodePowerMW, MetricDegraded} {
		f(Rule{Metric: m, Power: PowerGPU}, "rules[0] (r): power: only for headroom_mw, oscillation_mw, power_max_mw, power_mw, ramp_mw_per_s, swing_mw")
	}
	f(Rule{Metric: MetricUnaccountedRatio, Threshold: fp(0.2)}, "")
	f(Rule{Metric: MetricUnaccountedMW, OfCapacity: fp(0.1)}, "")
	f(Rule{Metric: MetricNodePowerMW, OfCapacity: fp(0.9)}, "")
	f(Rule{Metric: MetricStaleMeters, OfCapacity: fp(0.9)}, "of_capacity: not for stale_meters")
	f(Rule{Metric: MetricUnaccountedRatio, OfCapacity: fp(0.9)}, "of_capacity: not for unaccounted_ratio")
	// power: in YAML
	if _, err := Parse([]byte("rules:\n  - {name: a, level: hall, metric: ramp_mw_per_s, power: facilty, threshold: 5, severity: page}\n"), "r.yaml"); err == nil ||
		!strings.Contains(err.Error(), "r.yaml") || !strings.Contains(err.Error(), "power: want gpu or facility") {
		t.Errorf("bad power in YAML: %v", err)
	}
}

func TestPowerDefaults(t *testing.T) {
	want := map[string]string{
		MetricPowerMW: PowerFacility, MetricPowerMaxMW: PowerFacility, MetricHeadroomMW: PowerFacility,
		MetricRampMWPerS: PowerGPU, MetricSwingMW: PowerGPU, MetricOscillationMW: PowerGPU,
		MetricUnaccountedMW: PowerFacility, MetricUnaccountedRatio: PowerFacility, MetricStaleMeters: PowerFacility,
		MetricNodePowerMW: PowerGPU, MetricCoverage: PowerGPU, MetricStaleNodes: PowerGPU, MetricGPUTempMaxC: PowerGPU,
	}
	for m, p := range want {
		r := Rule{Metric: m}
		if got := r.Figure(); got != p {
			t.Errorf("%s: default figure %s, want %s", m, got, p)
		}
	}
	for _, m := range []string{MetricPowerMW, MetricRampMWPerS} {
		for _, p := range []string{PowerGPU, PowerFacility} {
			if r := (Rule{Metric: m, Power: p}); r.Figure() != p {
				t.Errorf("%s power %s: figure %s", m, p, r.Figure())
			}
		}
	}
	for _, m := range []string{MetricUnaccountedMW, MetricUnaccountedRatio, MetricStaleMeters, MetricNodePowerMW} {
		if Unit(m) == "" {
			t.Errorf("%s has no unit", m)
		}
	}
	if HoldsWhileDegraded(MetricStaleMeters) || !HoldsWhileDegraded(MetricUnaccountedRatio) || !HoldsWhileDegraded(MetricNodePowerMW) {
		t.Error("stale_meters describes the telemetry (resolves on its own); unaccounted and node power hold")
	}
}

// figures is a source with separate GPU and facility values and qualities.
type figures struct {
	gpu, fac      float64
	gpuQ, facQ    Quality
	noFac         bool // the facility metrics have no value (no fresh meter)
	seen, seenQ   []string
	unaccountedMW float64
}

func (s *figures) Value(_ int, m, power string, _ []float64) (float64, float64, bool) {
	s.seen = append(s.seen, m+"/"+power)
	switch m {
	case MetricUnaccountedRatio, MetricUnaccountedMW:
		return s.unaccountedMW, 0, !s.noFac
	}
	if power == PowerFacility {
		return s.fac, 0, true
	}
	return s.gpu, 0, true
}

func (s *figures) Quality(_ int, power string) Quality {
	s.seenQ = append(s.seenQ, power)
	if power == PowerFacility {
		return s.facQ
	}
	return s.gpuQ
}

// Facility rules hold while the facility figure is degraded, GPU rules while
// the GPU figure is; each says which figure it evaluates and, held, why.
func TestDegradedHoldsPerFigure(t *testing.T) {
	fac := Rule{Name: "fac", Level: "hall", Metric: MetricPowerMW, Threshold: fp(19), Clear: fp(18), Severity: "critical"}
	gpu := Rule{Name: "gpu", Level: "hall", Metric: MetricPowerMW, Power: PowerGPU, Threshold: fp(19), Clear: fp(18), Severity: "critical"}
	e, err := NewEvaluator([]Rule{fac, gpu}, hall[:1], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ok := Quality{Coverage: 1, Figure: "GPU"}
	metered := Quality{Coverage: 1, Figure: "facility (metered)"}
	stale := Quality{Coverage: 1, Degraded: true, Figure: "facility (node sum, meters stale)", Why: "1 of 2 meters stale: the facility figure is the node sum"}
	lowCov := Quality{Coverage: 0.4, Degraded: true, Figure: "GPU"}
	steps := []struct {
		src  figures
		want string
	}{
		{figures{gpu: 20, fac: 25, gpuQ: ok, facQ: metered}, "fac:firing gpu:firing"},
		// meters stale: the facility figure (node sum) looks lower; the
		// facility alert holds, the GPU one (measured) resolves.
		{figures{gpu: 10, fac: 12, gpuQ: ok, facQ: stale}, "gpu:resolved"},
		{figures{gpu: 20, fac: 12, gpuQ: ok, facQ: stale}, "gpu:firing"},
		// nodes silent, meters fine: the GPU alert holds, the facility one
		// (metered) resolves.
		{figures{gpu: 5, fac: 10, gpuQ: lowCov, facQ: metered}, "fac:resolved"},
		{figures{gpu: 5, fac: 10, gpuQ: ok, facQ: metered}, "gpu:resolved"},
	}
	for i, s := range steps {
		var got []string
		at := testT0.Add(time.Duration(i) * time.Second)
		for _, a := range e.Eval(at, &s.src) {
			got = append(got, a.Rule+":"+a.State)
			want := map[string]string{"fac": s.src.facQ.Figure, "gpu": s.src.gpuQ.Figure}[a.Rule]
			if a.Annotations["power"] != want {
				t.Errorf("step %d %s: power annotation %q, want %q", i, a.Rule, a.Annotations["power"], want)
			}
		}
		if strings.Join(got, " ") != s.want {
			t.Errorf("step %d: notified %q, want %q", i, strings.Join(got, " "), s.want)
		}
		if strings.Join(s.src.seenQ, ",") != "facility,gpu" || strings.Join(s.src.seen, ",") != "power_mw/facility,power_mw/gpu" {
			t.Errorf("step %d: asked %v %v", i, s.src.seen, s.src.seenQ)
		}
		if i == 1 {
			act := e.Active(at)
			if len(act) != 2 || act[0].Rule != "fac" || !strings.Contains(act[0].Annotations["telemetry"], "1 of 2 meters stale") ||
				!strings.Contains(act[0].Annotations["telemetry"], "stays firing") || act[0].Annotations["power"] != "facility (node sum, meters stale)" {
				t.Errorf("held facility alert: %+v", act)
			}
		}
	}
}

// unaccounted_ratio without a fresh meter has no value: the state machine
// keeps its state (a divergence alert never resolves on missing data), and
// resolves once the meter is back and the ratio below clear.
func TestUnaccountedWithoutMeterKeepsState(t *testing.T) {
	r := Rule{Name: "div", Level: "hall", Metric: MetricUnaccountedRatio, Threshold: fp(0.2), Clear: fp(0.15), For: 2 * time.Second, Severity: "warning"}
	e, err := NewEvaluator([]Rule{r}, hall[:1], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	metered := Quality{Coverage: 0.7, Figure: "facility (metered)"}
	steps := []struct {
		src   figures
		state string
	}{
		{figures{unaccountedMW: 0.3, facQ: metered}, StatePending},
		{figures{noFac: true, facQ: Quality{Coverage: 0.7, Degraded: true}}, StatePending}, // no meter: pending stays
		{figures{unaccountedMW: 0.3, facQ: metered}, StateFiring},
		{figures{noFac: true, facQ: Quality{Coverage: 0.7, Degraded: true}}, StateFiring},
		{figures{noFac: true, facQ: Quality{Coverage: 0.7, Degraded: true}}, StateFiring},
		{figures{unaccountedMW: 0.1, facQ: metered}, StateResolved},
	}
	for i, s := range steps {
		e.Eval(testT0.Add(time.Duration(i)*time.Second), &s.src)
		if got := e.rules[0].inst[0].rec.State; got != s.state {
			t.Fatalf("step %d: state %s, want %s", i, got, s.state)
		}
	}
}
