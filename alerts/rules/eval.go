package rules

import (
	"fmt"
	"hash/fnv"
	"maps"
	"path"
	"strings"
	"text/template"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
)

// States of a (rule, domain).
const (
	StateInactive = "inactive"
	StatePending  = "pending"
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Domain is what the evaluator needs to know of a topology domain.
type Domain struct {
	ID        int // index the Source understands
	Level     string
	Path      []string
	Key       string
	CapacityW float64
}

// Source gives a metric's value for a domain in the current window; ok is
// false when it is not available (no analysis yet, no temperatures, no
// fresh meter). power is the rule's figure (PowerGPU or PowerFacility,
// Rule.Figure). freqHz is set for oscillation_mw.
type Source interface {
	Value(domainID int, metric, power string, band []float64) (value, freqHz float64, ok bool)
	// Quality is the state of the domain's figure power in the current
	// window.
	Quality(domainID int, power string) Quality
}

// Quality is what a Source says of a domain's figure in one window.
type Quality struct {
	// Coverage is the domain's node coverage (0..1).
	Coverage float64
	// Degraded: the figure is partly estimated (GPU: coverage below
	// resolve_min_coverage; facility: meters stale, or node sum at low
	// coverage). Firing alerts on it do not resolve.
	Degraded bool
	// Figure names the figure in this window: "GPU", "facility (metered)",
	// "facility (node sum)", "facility (node sum, meters stale)".
	Figure string
	// Why says, when Degraded, why (for the annotation of a held alert).
	Why string
}

// Record is the persisted state of one (rule, domain): the KV value.
type Record struct {
	Rule        string    `json:"rule"`
	Domain      string    `json:"domain"`
	Fingerprint string    `json:"fingerprint"`
	State       string    `json:"state"`
	ActiveAt    time.Time `json:"active_at,omitzero"`
	FiredAt     time.Time `json:"fired_at,omitzero"`
	ClearSince  time.Time `json:"clear_since,omitzero"`
	ResolvedAt  time.Time `json:"resolved_at,omitzero"`
	Value       float64   `json:"value"`
	FreqHz      float64   `json:"freq_hz,omitempty"`
	Threshold   float64   `json:"threshold"`
	Coverage    float64   `json:"coverage"`
	Degraded    bool      `json:"degraded,omitempty"`
	// Figure and Why are the Quality of the last evaluated window.
	Figure string `json:"figure,omitempty"`
	Why    string `json:"why,omitempty"`
	// HeldDegraded: the value is on the clear side but the alert stays
	// firing because the domain's telemetry is degraded.
	HeldDegraded bool `json:"held_degraded,omitempty"`
}

// Fingerprint is the stable identity of (rule, domain key).
func Fingerprint(rule, domain string) string {
	h := fnv.New64a()
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(domain))
	return fmt.Sprintf("%016x", h.Sum64())
}

type instance struct {
	dom      *Domain
	thr, clr float64
	rec      Record
	dirty    bool
}

type compiled struct {
	Rule
	below bool
	power string // Rule.Figure
	hold  bool   // stays firing while degraded
	tmpl  map[string]*template.Template
	inst  []instance
}

// Evaluator holds the rules, their domains and the state of each pair.
// It is not safe for concurrent use.
type Evaluator struct {
	rules     []*compiled
	byFP      map[string]*instance
	retention time.Duration
}

// NewEvaluator selects each rule's domains; resolved alerts are kept (and
// re-sent to Alertmanager) for retention before they become inactive.
func NewEvaluator(rs []Rule, domains []Domain, retention time.Duration) (*Evaluator, error) {
	e := &Evaluator{byFP: map[string]*instance{}, retention: retention}
	for _, r := range rs {
		c := &compiled{Rule: r, below: r.Below(), power: r.Figure(), hold: HoldsWhileDegraded(r.Metric), tmpl: map[string]*template.Template{}}
		for k, v := range r.Annotations {
			t, err := parseTemplate(k, v)
			if err != nil {
				return nil, fmt.Errorf("rule %s: annotations.%s: %w", r.Name, k, err)
			}
			c.tmpl[k] = t
		}
		for i := range domains {
			d := &domains[i]
			if !selects(&r, d) {
				continue
			}
			capMW := d.CapacityW / 1e6
			in := instance{dom: d}
			if r.OfCapacity != nil {
				in.thr = *r.OfCapacity * capMW
			} else {
				in.thr = *r.Threshold
			}
			switch {
			case r.ClearOfCapacity != nil:
				in.clr = *r.ClearOfCapacity * capMW
			case r.Clear != nil:
				in.clr = *r.Clear
			default:
				in.clr = in.thr
			}
			in.rec = Record{Rule: r.Name, Domain: d.Key, Fingerprint: Fingerprint(r.Name, d.Key), State: StateInactive, Threshold: in.thr}
			c.inst = append(c.inst, in)
		}
		e.rules = append(e.rules, c)
	}
	for _, c := range e.rules {
		for i := range c.inst {
			e.byFP[c.inst[i].rec.Fingerprint] = &c.inst[i]
		}
	}
	return e, nil
}

func selects(r *Rule, d *Domain) bool {
	if r.Level != "" && r.Level != d.Level {
		return false
	}
	if len(r.Domains) == 0 {
		return true
	}
	for _, g := range r.Domains {
		if ok, _ := path.Match(g, d.Key); ok {
			return true
		}
	}
	return false
}

// Instances is the number of (rule, domain) pairs evaluated per window.
func (e *Evaluator) Instances() int { return len(e.byFP) }

// Restore loads persisted records (from KV at start). Records of rules or
// domains that no longer exist are ignored.
func (e *Evaluator) Restore(recs []Record) int {
	n := 0
	for _, r := range recs {
		if in, ok := e.byFP[r.Fingerprint]; ok {
			thr := in.rec.Threshold
			in.rec = r
			in.rec.Threshold = thr
			n++
		}
	}
	return n
}

// Eval runs every rule on the window ending at `at` and returns the
// notifications (state changes to firing or resolved).
func (e *Evaluator) Eval(at time.Time, src Source) []notify.Alert {
	var out []notify.Alert
	for _, c := range e.rules {
		for i := range c.inst {
			in := &c.inst[i]
			v, f, ok := src.Value(in.dom.ID, c.Metric, c.power, c.Band)
			q := src.Quality(in.dom.ID, c.power)
			in.rec.Coverage, in.rec.Degraded, in.rec.Figure, in.rec.Why = q.Coverage, q.Degraded, q.Figure, q.Why
			if a, changed := e.step(c, in, at, v, f, ok); changed {
				out = append(out, a)
			}
		}
	}
	return out
}

func (e *Evaluator) step(c *compiled, in *instance, at time.Time, v, f float64, ok bool) (notify.Alert, bool) {
	r := &in.rec
	if r.State == StateResolved && at.Sub(r.ResolvedAt) >= e.retention {
		*r = Record{Rule: r.Rule, Domain: r.Domain, Fingerprint: r.Fingerprint, State: StateInactive, Threshold: in.thr}
		in.dirty = true
	}
	if !ok {
		return notify.Alert{}, false
	}
	r.Value, r.FreqHz = v, f
	breach := v > in.thr
	cleared := v <= in.clr
	if c.below {
		breach, cleared = v < in.thr, v >= in.clr
	}
	switch r.State {
	case StateInactive, StateResolved:
		if !breach {
			return notify.Alert{}, false
		}
		r.State, r.ActiveAt, r.FiredAt, r.ClearSince = StatePending, at, time.Time{}, time.Time{}
		in.dirty = true
		if c.For > 0 {
			return notify.Alert{}, false
		}
		fallthrough
	case StatePending:
		if !breach {
			r.State, r.ActiveAt = StateInactive, time.Time{}
			in.dirty = true
			return notify.Alert{}, false
		}
		if at.Sub(r.ActiveAt) < c.For {
			return notify.Alert{}, false
		}
		r.State, r.FiredAt, r.ResolvedAt = StateFiring, at, time.Time{}
		in.dirty = true
		return e.alert(c, in, at), true
	case StateFiring:
		// Missing is never a reason to resolve: on the clear side while the
		// domain's telemetry is degraded, the alert stays firing (and says so).
		held := cleared && c.hold && r.Degraded
		if held != r.HeldDegraded {
			r.HeldDegraded = held
			in.dirty = true
		}
		if !cleared || held {
			if !r.ClearSince.IsZero() {
				r.ClearSince = time.Time{}
				in.dirty = true
			}
			return notify.Alert{}, false
		}
		if r.ClearSince.IsZero() {
			r.ClearSince = at
			in.dirty = true
		}
		if at.Sub(r.ClearSince) < c.KeepFiringFor {
			return notify.Alert{}, false
		}
		r.State, r.ResolvedAt = StateResolved, at
		in.dirty = true
		return e.alert(c, in, at), true
	}
	return notify.Alert{}, false
}

func (e *Evaluator) alert(c *compiled, in *instance, at time.Time) notify.Alert {
	r := &in.rec
	a := notify.Alert{
		Rule: c.Name, Severity: c.Severity, Level: in.dom.Level, Domain: in.dom.Key, Path: in.dom.Path,
		State: notify.StateFiring, Metric: c.Metric, Unit: Unit(c.Metric), Value: r.Value, Threshold: in.thr,
		Labels: maps.Clone(c.Labels), StartsAt: r.ActiveAt, At: at, Fingerprint: r.Fingerprint,
	}
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	if r.State == StateResolved {
		a.State, a.EndsAt = notify.StateResolved, r.ResolvedAt
	}
	td := TemplateData{Rule: c.Name, Severity: c.Severity, Level: a.Level, Domain: a.Domain, Metric: c.Metric, Unit: a.Unit,
		Path: a.Path, Value: r.Value, Threshold: in.thr, Clear: in.clr, CapacityMW: in.dom.CapacityW / 1e6, FreqHz: r.FreqHz, Labels: a.Labels,
		Coverage: r.Coverage, Degraded: r.Degraded, Power: c.power, Figure: r.Figure}
	if td.Figure == "" {
		td.Figure = figureName(c.power)
	}
	a.Annotations = make(map[string]string, len(c.tmpl)+4)
	for k, t := range c.tmpl {
		var b strings.Builder
		if err := t.Execute(&b, td); err != nil {
			b.WriteString(err.Error())
		}
		a.Annotations[k] = b.String()
	}
	a.Annotations["value"] = fmt.Sprintf("%.3f %s", r.Value, a.Unit)
	a.Annotations["threshold"] = fmt.Sprintf("%.3f %s", in.thr, a.Unit)
	if c.Metric == MetricOscillationMW {
		a.Annotations["freq_hz"] = fmt.Sprintf("%.3f", r.FreqHz)
	}
	a.Annotations["coverage"] = fmt.Sprintf("%.1f%%", 100*r.Coverage)
	a.Annotations["power"] = td.Figure
	why := r.Why
	if why == "" {
		why = fmt.Sprintf("only %.1f%% of nodes report; the figure is partly estimated (silent nodes at their last known power)", 100*r.Coverage)
	}
	switch {
	case r.HeldDegraded && a.State == notify.StateFiring:
		a.Annotations["telemetry"] = "degraded: " + why + ". It is on the clear side, but the alert stays firing until the figure is measured again"
	case r.Degraded:
		a.Annotations["telemetry"] = "degraded: " + why
	}
	return a
}

// figureName is the figure's name before any window was evaluated.
func figureName(power string) string {
	if power == PowerFacility {
		return "facility"
	}
	return "GPU"
}

// Dirty returns (and clears) the records that changed since the last call:
// what to write to KV. Inactive records are to be deleted.
func (e *Evaluator) Dirty() []Record {
	var out []Record
	for _, c := range e.rules {
		for i := range c.inst {
			if in := &c.inst[i]; in.dirty {
				in.dirty = false
				out = append(out, in.rec)
			}
		}
	}
	return out
}

// Active returns the alerts to re-send to Alertmanager: firing, and
// resolved within the retention.
func (e *Evaluator) Active(at time.Time) []notify.Alert {
	var out []notify.Alert
	for _, c := range e.rules {
		for i := range c.inst {
			if in := &c.inst[i]; in.rec.State == StateFiring || in.rec.State == StateResolved {
				out = append(out, e.alert(c, in, at))
			}
		}
	}
	return out
}

// View is a pending or firing (rule, domain) for the live page.
type View struct {
	Rule, Severity, Level, Domain, State string
	Value, Threshold                     float64
	Coverage                             float64
	Degraded, HeldDegraded               bool
	Summary                              string
	ActiveSince                          time.Time
}

// Views lists the pending and firing pairs.
func (e *Evaluator) Views(at time.Time) []View {
	var out []View
	for _, c := range e.rules {
		for i := range c.inst {
			in := &c.inst[i]
			if in.rec.State != StatePending && in.rec.State != StateFiring {
				continue
			}
			a := e.alert(c, in, at)
			out = append(out, View{Rule: c.Name, Severity: c.Severity, Level: in.dom.Level, Domain: in.dom.Key, State: in.rec.State,
				Value: in.rec.Value, Threshold: in.thr, Summary: a.Summary(), ActiveSince: in.rec.ActiveAt,
				Coverage: in.rec.Coverage, Degraded: in.rec.Degraded, HeldDegraded: in.rec.HeldDegraded})
		}
	}
	return out
}
