package rules

import (
	"os"
	"testing"
)

// FuzzParse: the rules loader never panics, and rules it accepts can be
// evaluated.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../../configs/alerts.yaml"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("rules:\n  - {name: a, level: hall, metric: power_mw, of_capacity: 0.9, clear_of_capacity: 0.8, for: 1m, severity: page}\n"))
	f.Add([]byte("rules:\n  - {name: o, domains: [\"dc1/*\"], metric: oscillation_mw, band: [0.2, 3], threshold: 5, severity: w, annotations: {s: \"{{ hz .FreqHz }}\"}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rs, err := Parse(data, "fuzz")
		if err != nil {
			return
		}
		e, err := NewEvaluator(rs, hall, 0)
		if err != nil {
			t.Fatalf("validated rules do not compile: %v", err)
		}
		e.Eval(testT0, fixed{0: 1e9, 1: -1})
		e.Eval(testT0.Add(1e9), fixed{0: 0, 1: 0})
		_ = e.Active(testT0)
		_ = e.Views(testT0)
	})
}
