// Package rules defines megawatch alert rules (configs/alerts.yaml), checks
// them, and runs the per-(rule, domain) state machine
// inactive → pending → firing → resolved with a clear threshold
// (hysteresis), a hold duration (`for`) and `keep_firing_for`.
package rules

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// Metrics a rule can watch.
const (
	MetricPowerMW       = "power_mw"       // estimate: reporting nodes + last known power of silent ones, MW
	MetricPowerMaxMW    = "power_max_mw"   // max 100 ms slot of the summed power + silent nodes' last power, MW
	MetricHeadroomMW    = "headroom_mw"    // capacity - power_mw, MW (fires below)
	MetricRampMWPerS    = "ramp_mw_per_s"  // largest 1 s change in the analysis window, MW/s
	MetricSwingMW       = "swing_mw"       // peak-to-peak over the analysis window, MW
	MetricOscillationMW = "oscillation_mw" // peak-to-peak MW of the dominant oscillation in band
	MetricCoverage      = "coverage"       // nodes reporting / expected, 0..1 (fires below)
	MetricGPUTempMaxC   = "gpu_temp_max_c"
	MetricMemTempMaxC   = "mem_temp_max_c"
	MetricThrottledGPUs = "throttled_gpus" // GPUs with thermal / power-brake clock events
	MetricStaleNodes    = "stale_nodes"    // expected nodes not counted this window
	// MetricDegraded is 1 while the domain's telemetry is degraded
	// (coverage below resolve_min_coverage), else 0.
	MetricDegraded = "telemetry_degraded"

	// Facility power (docs/alerts.md "Facility power").
	//
	// MetricUnaccountedMW is metered power minus the node power of the
	// reporting nodes: non-IT load on the feed, losses, and nodes whose
	// collectors are missing. No value without a fresh (or held) meter.
	MetricUnaccountedMW = "unaccounted_mw"
	// MetricUnaccountedRatio is unaccounted_mw / metered power; no value
	// without a fresh (or held) meter.
	MetricUnaccountedRatio = "unaccounted_ratio"
	// MetricStaleMeters counts the domain's meters (its subtree's) without
	// a fresh or held reading this window.
	MetricStaleMeters = "stale_meters"
	// MetricNodePowerMW is the node power estimate (measured or modeled
	// node power of the reporting nodes + the last known node power of the
	// silent ones), MW.
	MetricNodePowerMW = "node_power_mw"
)

// Power figures a power rule can evaluate (`power:`).
const (
	// PowerGPU is the sum of GPU power: the 10 Hz measurement.
	PowerGPU = "gpu"
	// PowerFacility is what the breaker carries: metered where fresh
	// meters cover the domain, else the node sum; at 10 Hz the GPU slot
	// series shifted to it.
	PowerFacility = "facility"
)

// powerDefault is the default `power:` of the metrics that take one:
// capacity figures are about the breaker (facility), ramp, swing and
// oscillation about the 10 Hz measurement (GPU).
var powerDefault = map[string]string{
	MetricPowerMW:       PowerFacility,
	MetricPowerMaxMW:    PowerFacility,
	MetricHeadroomMW:    PowerFacility,
	MetricRampMWPerS:    PowerGPU,
	MetricSwingMW:       PowerGPU,
	MetricOscillationMW: PowerGPU,
}

// figureOf is the figure whose quality (coverage, degraded) a metric
// without `power:` follows.
var figureOf = map[string]string{
	MetricUnaccountedMW:    PowerFacility,
	MetricUnaccountedRatio: PowerFacility,
	MetricStaleMeters:      PowerFacility,
}

// TakesPower reports whether metric takes the `power:` key.
func TakesPower(metric string) bool { _, ok := powerDefault[metric]; return ok }

// metricInfo is the unit, default comparison and whether of_capacity applies.
type metricInfo struct {
	unit       string
	below      bool
	ofCapacity bool
}

var metrics = map[string]metricInfo{
	MetricPowerMW:       {"MW", false, true},
	MetricPowerMaxMW:    {"MW", false, true},
	MetricHeadroomMW:    {"MW", true, true},
	MetricRampMWPerS:    {"MW/s", false, false},
	MetricSwingMW:       {"MW", false, true},
	MetricOscillationMW: {"MW", false, true},
	MetricCoverage:      {"ratio", true, false},
	MetricGPUTempMaxC:   {"C", false, false},
	MetricMemTempMaxC:   {"C", false, false},
	MetricThrottledGPUs: {"count", false, false},
	MetricStaleNodes:    {"count", false, false},
	MetricDegraded:      {"bool", false, false},

	MetricUnaccountedMW:    {"MW", false, true},
	MetricUnaccountedRatio: {"ratio", false, false},
	MetricStaleMeters:      {"count", false, false},
	MetricNodePowerMW:      {"MW", false, true},
}

// HoldsWhileDegraded reports whether a firing alert on metric stays firing
// while its domain's telemetry is degraded: every metric whose figure
// missing nodes (or meters) could make look better. Coverage, stale nodes,
// stale meters and the degraded state itself describe the telemetry and
// resolve on their own. Which degraded state holds a rule depends on its
// figure (Rule.Figure): facility rules hold while the facility figure is
// degraded, GPU rules while the GPU figure is.
func HoldsWhileDegraded(metric string) bool {
	switch metric {
	case MetricCoverage, MetricStaleNodes, MetricDegraded, MetricStaleMeters:
		return false
	}
	return true
}

// Metrics lists the metric names, sorted.
func Metrics() []string {
	out := make([]string, 0, len(metrics))
	for m := range metrics {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Unit of a metric ("MW", "MW/s", "ratio", "C", "count").
func Unit(metric string) string { return metrics[metric].unit }

// Rule is one entry of `rules:`.
type Rule struct {
	Name string `yaml:"name"`
	// Level selects every domain of a level (site, hall, row, rack, pdu...).
	Level string `yaml:"level"`
	// Domains narrows (or, without level, makes) the selection: globs over
	// domain keys such as "dc1/h1" or "dc1/*/r0?".
	Domains []string `yaml:"domains,omitempty"`
	Metric  string   `yaml:"metric"`
	// Power chooses the figure of a power metric (power_mw, power_max_mw,
	// headroom_mw, ramp_mw_per_s, swing_mw, oscillation_mw): "facility"
	// (what the breaker carries; default for power_mw, power_max_mw and
	// headroom_mw) or "gpu" (the GPU sum; default for ramp, swing and
	// oscillation).
	Power string `yaml:"power,omitempty"`
	// Band is [low, high] Hz for oscillation_mw.
	Band []float64 `yaml:"band,omitempty"`
	// Op is "above" or "below"; the default is below for headroom_mw and
	// coverage and above for the rest.
	Op string `yaml:"op,omitempty"`
	// Threshold in the metric's unit, or OfCapacity as a fraction of the
	// domain's capacity (MW metrics only). Exactly one is set.
	Threshold  *float64 `yaml:"threshold,omitempty"`
	OfCapacity *float64 `yaml:"of_capacity,omitempty"`
	// Clear (or ClearOfCapacity) is where a firing alert resolves; it must
	// be on the safe side of the threshold. Default: the threshold.
	Clear           *float64          `yaml:"clear,omitempty"`
	ClearOfCapacity *float64          `yaml:"clear_of_capacity,omitempty"`
	For             time.Duration     `yaml:"for,omitempty"`
	KeepFiringFor   time.Duration     `yaml:"keep_firing_for,omitempty"`
	Severity        string            `yaml:"severity"`
	Labels          map[string]string `yaml:"labels,omitempty"`
	// Annotations are text/template strings over TemplateData, e.g.
	// "{{ .Domain }} at {{ mw .Value }} (threshold {{ mw .Threshold }})".
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// File is a rules file: `rules: [...]`.
type File struct {
	Rules []Rule `yaml:"rules"`
}

// Load reads and validates a rules file.
func Load(path string) ([]Rule, error) {
	var f File
	if err := config.Load(path, &f); err != nil {
		return nil, err
	}
	if err := Validate(f.Rules, nil); err != nil {
		return nil, config.Annotate(path, err)
	}
	return f.Rules, nil
}

// Parse decodes and validates rules YAML; source names it in errors.
func Parse(data []byte, source string) ([]Rule, error) {
	var f File
	if err := config.Decode(data, source, &f); err != nil {
		return nil, err
	}
	if err := Validate(f.Rules, nil); err != nil {
		return nil, config.Annotate(source, err)
	}
	return f.Rules, nil
}

// Below reports whether the rule fires when the value falls below the threshold.
func (r *Rule) Below() bool {
	switch r.Op {
	case "above":
		return false
	case "below":
		return true
	}
	return metrics[r.Metric].below
}

// Figure is the power figure the rule evaluates and whose quality holds
// it: its `power:`, else the metric's default; "gpu" for the metrics
// about nodes and GPUs, "facility" for the meter metrics.
func (r *Rule) Figure() string {
	if r.Power != "" && TakesPower(r.Metric) {
		return r.Power
	}
	if p, ok := powerDefault[r.Metric]; ok {
		return p
	}
	if p, ok := figureOf[r.Metric]; ok {
		return p
	}
	return PowerGPU
}

// Validate returns every problem of every rule at once, each as
// "rules[i] (name): key: problem". levels, when non-nil, are the topology's
// levels that `level` must name.
func Validate(rs []Rule, levels []string) error {
	var errs []error
	seen := map[string]int{}
	for i := range rs {
		r := &rs[i]
		bad := func(key, f string, a ...any) {
			errs = append(errs, fmt.Errorf("rules[%d] (%s): %s: %s", i, r.Name, key, fmt.Sprintf(f, a...)))
		}
		if err := telemetry.ValidateToken(r.Name); err != nil {
			bad("name", "%v", err)
		} else if j, dup := seen[r.Name]; dup {
			bad("name", "duplicate of rules[%d]", j)
		} else {
			seen[r.Name] = i
		}
		if r.Level == "" && len(r.Domains) == 0 {
			bad("level", "set level or domains")
		}
		if r.Level != "" && levels != nil && !slices.Contains(levels, r.Level) {
			bad("level", "%q is not a topology level (%s)", r.Level, strings.Join(levels, ", "))
		}
		for j, g := range r.Domains {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				bad(fmt.Sprintf("domains[%d]", j), "bad glob %q", g)
			}
		}
		mi, ok := metrics[r.Metric]
		if !ok {
			bad("metric", "unknown metric %q (one of %s)", r.Metric, strings.Join(Metrics(), ", "))
		}
		if r.Metric == MetricOscillationMW {
			if len(r.Band) != 2 || !(r.Band[0] > 0 && r.Band[0] < r.Band[1]) {
				bad("band", "want [low, high] Hz with 0 < low < high, got %v", r.Band)
			}
		} else if len(r.Band) > 0 {
			bad("band", "only for %s", MetricOscillationMW)
		}
		switch {
		case r.Power == "":
		case ok && !TakesPower(r.Metric):
			bad("power", "only for %s", strings.Join(powerMetrics(), ", "))
		case r.Power != PowerGPU && r.Power != PowerFacility:
			bad("power", "want %s or %s, got %q", PowerGPU, PowerFacility, r.Power)
		}
		if r.Op != "" && r.Op != "above" && r.Op != "below" {
			bad("op", "want above or below, got %q", r.Op)
		}
		switch {
		case (r.Threshold == nil) == (r.OfCapacity == nil):
			bad("threshold", "set exactly one of threshold and of_capacity")
		case r.OfCapacity != nil && ok && !mi.ofCapacity:
			bad("of_capacity", "not for %s (MW metrics only)", r.Metric)
		case r.OfCapacity != nil && !(*r.OfCapacity > 0 && *r.OfCapacity <= 10):
			bad("of_capacity", "want a fraction of capacity in (0, 10], got %v", *r.OfCapacity)
		}
		if r.Clear != nil && r.ClearOfCapacity != nil {
			bad("clear", "set at most one of clear and clear_of_capacity")
		}
		if r.ClearOfCapacity != nil && r.OfCapacity == nil {
			bad("clear_of_capacity", "needs of_capacity")
		}
		if r.Clear != nil && r.Threshold == nil {
			bad("clear", "needs threshold (use clear_of_capacity with of_capacity)")
		}
		if t, c := ptrOr(r.Threshold, r.OfCapacity), ptrOr(r.Clear, r.ClearOfCapacity); t != nil && c != nil {
			if r.Below() && *c < *t {
				bad("clear", "%v must be >= the threshold %v for a below rule", *c, *t)
			}
			if !r.Below() && *c > *t {
				bad("clear", "%v must be <= the threshold %v for an above rule", *c, *t)
			}
		}
		if r.For < 0 {
			bad("for", "must not be negative")
		}
		if r.KeepFiringFor < 0 {
			bad("keep_firing_for", "must not be negative")
		}
		if err := telemetry.ValidateToken(r.Severity); err != nil {
			bad("severity", "%v", err)
		}
		for k := range r.Labels {
			if !labelName(k) {
				bad("labels."+k, "label names are [a-zA-Z_][a-zA-Z0-9_]*")
			}
		}
		for k, v := range r.Annotations {
			if _, err := parseTemplate(k, v); err != nil {
				bad("annotations."+k, "%v", err)
			}
		}
	}
	return errors.Join(errs...)
}

func powerMetrics() []string {
	out := make([]string, 0, len(powerDefault))
	for m := range powerDefault {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

func ptrOr(a, b *float64) *float64 {
	if a != nil {
		return a
	}
	return b
}

func labelName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// TemplateData is what annotation templates see.
type TemplateData struct {
	Rule, Severity, Level, Domain, Metric, Unit string
	Path                                        []string
	Value, Threshold, Clear                     float64 // in the metric's unit (MW for MW metrics)
	CapacityMW                                  float64
	FreqHz                                      float64 // oscillation_mw: frequency of the dominant oscillation
	// Coverage of the domain (0..1) in the evaluated window; Degraded when
	// the rule's figure is degraded (partly estimated, or its meters stale).
	Coverage float64
	Degraded bool
	// Power is the rule's figure ("gpu" or "facility"); Figure says what it
	// was in the evaluated window: "GPU", "facility (metered)", "facility
	// (node sum)" or "facility (node sum, meters stale)".
	Power, Figure string
	Labels        map[string]string
}

var funcs = template.FuncMap{
	"mw":  func(v float64) string { return fmt.Sprintf("%.2f MW", v) },
	"pct": func(v float64) string { return fmt.Sprintf("%.1f%%", v*100) },
	"hz":  func(v float64) string { return fmt.Sprintf("%.2f Hz", v) },
	"f":   func(v float64) string { return fmt.Sprintf("%.2f", v) },
	"div": func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	},
}

func parseTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Funcs(funcs).Option("missingkey=zero").Parse(text)
}
