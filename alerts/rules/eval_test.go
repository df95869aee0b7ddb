package rules

import (
	"strings"
	"testing"
	"time"
)

type fixed map[int]float64

func (f fixed) Value(id int, _, _ string, _ []float64) (float64, float64, bool) {
	v, ok := f[id]
	return v, 0.5, ok
}

func (f fixed) Quality(int, string) Quality { return Quality{Coverage: 1} }

// degradedSrc is one domain's value with its coverage; degraded below 0.9.
type degradedSrc struct{ v, cov float64 }

func (d degradedSrc) Value(_ int, m, _ string, _ []float64) (float64, float64, bool) {
	if m == MetricCoverage {
		return d.cov, 0, true
	}
	return d.v, 0, true
}
func (d degradedSrc) Quality(int, string) Quality {
	return Quality{Coverage: d.cov, Degraded: d.cov < 0.9}
}

func fp(v float64) *float64 { return &v }

var testT0 = time.Unix(1800000000, 0)

var hall = []Domain{{ID: 0, Level: "hall", Path: []string{"dc1", "h1"}, Key: "dc1/h1", CapacityW: 20e6},
	{ID: 1, Level: "hall", Path: []string{"dc1", "h2"}, Key: "dc1/h2", CapacityW: 10e6}}

// run feeds one value per second to domain 0 and returns the state after
// each step and the notifications as "t:state".
func run(t *testing.T, r Rule, values ...float64) (states []string, notes []string) {
	t.Helper()
	if err := Validate([]Rule{r}, nil); err != nil {
		t.Fatal(err)
	}
	e, err := NewEvaluator([]Rule{r}, hall[:1], 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1800000000, 0)
	for i, v := range values {
		for _, a := range e.Eval(t0.Add(time.Duration(i)*time.Second), fixed{0: v}) {
			notes = append(notes, strings.Join([]string{string(rune('0' + i)), a.State}, ":"))
		}
		states = append(states, e.rules[0].inst[0].rec.State)
	}
	return states, notes
}

func TestStateMachine(t *testing.T) {
	f := func(name string, r Rule, values []float64, wantStates, wantNotes string) {
		t.Helper()
		r.Name, r.Level, r.Severity = "r", "hall", "page"
		if r.Metric == "" {
			r.Metric = MetricPowerMW
		}
		s, n := run(t, r, values...)
		short := map[string]string{StateInactive: "i", StatePending: "p", StateFiring: "F", StateResolved: "r"}
		var got strings.Builder
		for _, x := range s {
			got.WriteString(short[x])
		}
		if got.String() != wantStates || strings.Join(n, " ") != wantNotes {
			t.Errorf("%s: states %s notes %q, want %s %q", name, got.String(), strings.Join(n, " "), wantStates, wantNotes)
		}
	}
	// of_capacity 0.95 of 20 MW = 19 MW; clear 0.92 = 18.4 MW
	pow := Rule{OfCapacity: fp(0.95), ClearOfCapacity: fp(0.92), For: 2 * time.Second}
	f("for then hysteresis", pow, []float64{18, 19.5, 19.5, 19.5, 18.9, 18.5, 18.3, 18}, "ippFFFrr", "3:firing 6:resolved")
	f("pending cancels", pow, []float64{19.5, 19.5, 18.9, 19.5}, "ppip", "")
	f("no for fires at once", Rule{Threshold: fp(10)}, []float64{11, 9, 11}, "FrF", "0:firing 1:resolved 2:firing")
	f("keep_firing_for", Rule{Threshold: fp(10), KeepFiringFor: 2 * time.Second}, []float64{11, 9, 9, 11, 9, 9, 9}, "FFFFFFr", "0:firing 6:resolved")
	f("below: coverage", Rule{Metric: MetricCoverage, Threshold: fp(0.98), Clear: fp(0.99)}, []float64{1, 0.9, 0.985, 0.995}, "iFFr", "1:firing 3:resolved")
	f("op above on headroom", Rule{Metric: MetricHeadroomMW, Op: "above", Threshold: fp(5)}, []float64{6, 4}, "Fr", "0:firing 1:resolved")
	f("resolved retention", Rule{Threshold: fp(10)}, append([]float64{11, 9}, make([]float64, 10)...), "Frrrrrrrrrri"[:12], "0:firing 1:resolved")
}

func TestMissingValueHoldsState(t *testing.T) {
	r := Rule{Name: "r", Level: "hall", Metric: MetricRampMWPerS, Threshold: fp(1), Severity: "page"}
	e, _ := NewEvaluator([]Rule{r}, hall, time.Minute)
	t0 := time.Unix(1800000000, 0)
	if n := e.Eval(t0, fixed{0: 2}); len(n) != 1 || !n[0].Firing() {
		t.Fatalf("%+v", n)
	}
	if n := e.Eval(t0.Add(time.Second), fixed{}); len(n) != 0 {
		t.Fatalf("missing value changed state: %+v", n)
	}
	if e.Instances() != 2 {
		t.Fatalf("instances %d", e.Instances())
	}
}

func TestRestoreAndAlertFields(t *testing.T) {
	r := Rule{Name: "hall_power", Level: "hall", Metric: MetricPowerMW, OfCapacity: fp(0.9), Severity: "critical",
		Labels: map[string]string{"team": "facility"}, Annotations: map[string]string{"summary": "{{ .Domain }} {{ mw .Value }} > {{ mw .Threshold }}"}}
	e1, _ := NewEvaluator([]Rule{r}, hall, time.Minute)
	t0 := time.Unix(1800000000, 0)
	n := e1.Eval(t0, fixed{0: 19, 1: 5})
	if len(n) != 1 {
		t.Fatalf("%+v", n)
	}
	a := n[0]
	if a.Domain != "dc1/h1" || a.Threshold != 18 || a.Value != 19 || a.Unit != "MW" || a.Labels["team"] != "facility" ||
		a.Annotations["summary"] != "dc1/h1 19.00 MW > 18.00 MW" || a.Fingerprint != Fingerprint("hall_power", "dc1/h1") || !a.StartsAt.Equal(t0) {
		t.Fatalf("alert %+v", a)
	}
	recs := e1.Dirty()
	if len(recs) != 1 || recs[0].State != StateFiring {
		t.Fatalf("dirty %+v", recs)
	}
	e2, _ := NewEvaluator([]Rule{r}, hall, time.Minute)
	if e2.Restore(recs) != 1 {
		t.Fatal("not restored")
	}
	if n := e2.Eval(t0.Add(time.Second), fixed{0: 19.5, 1: 5}); len(n) != 0 {
		t.Fatalf("restored firing alert paged again: %+v", n)
	}
	n = e2.Eval(t0.Add(2*time.Second), fixed{0: 10, 1: 5})
	if len(n) != 1 || n[0].State != "resolved" || !n[0].StartsAt.Equal(t0) || !n[0].EndsAt.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("resolve after restore: %+v", n)
	}
	if v := e2.Views(t0); len(v) != 0 {
		t.Fatalf("views %+v", v)
	}
}

// A firing power alert whose domain loses most of its reports stays firing
// (with the coverage in its annotation) although the value falls below the
// clear level; it resolves only once coverage is back and the value is
// below clear. Coverage alerts themselves resolve normally.
func TestNoResolveWhileDegraded(t *testing.T) {
	r := Rule{Name: "p", Level: "hall", Metric: MetricPowerMW, Threshold: fp(19), Clear: fp(18), Severity: "critical"}
	e, err := NewEvaluator([]Rule{r, {Name: "c", Level: "hall", Metric: MetricCoverage, Threshold: fp(0.98), Severity: "warning"}}, hall[:1], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		v, cov float64
		want   string // notifications, "rule:state" joined
	}{
		{20, 1, "p:firing"},
		{10, 0.4, "c:firing"}, // 60 % silent: below clear but degraded: no resolve
		{5, 0.4, ""},
		{17, 1, "p:resolved c:resolved"}, // coverage back, below clear
	}
	for i, s := range steps {
		var got []string
		for _, a := range e.Eval(testT0.Add(time.Duration(i)*time.Second), degradedSrc{s.v, s.cov}) {
			got = append(got, a.Rule+":"+a.State)
			if a.Rule == "p" && a.Annotations["coverage"] == "" {
				t.Errorf("step %d: no coverage annotation: %v", i, a.Annotations)
			}
		}
		if strings.Join(got, " ") != s.want {
			t.Errorf("step %d (%v MW, coverage %v): notified %q, want %q", i, s.v, s.cov, strings.Join(got, " "), s.want)
		}
		if i == 2 {
			act := e.Active(testT0.Add(3 * time.Second))
			if len(act) != 2 || !strings.Contains(act[0].Annotations["telemetry"], "40.0%") || act[0].Annotations["coverage"] != "40.0%" {
				t.Errorf("re-sent while held: %+v", act)
			}
			if v := e.Views(testT0); len(v) != 2 || !v[0].HeldDegraded || !v[0].Degraded {
				t.Errorf("views while held: %+v", v)
			}
		}
	}
}
