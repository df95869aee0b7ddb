package rules

import (
	"strings"
	"testing"
	"time"
)

type fixed map[int]float64

func (f fixed) Value(id int, _ string, _ []float64) (float64, float64, bool) {
	v, ok := f[id]
	return v, 0.5, ok
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
