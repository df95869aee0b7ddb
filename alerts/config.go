package alerts

import (
	"errors"
	"fmt"
	"github.com/megawatch/megawatch/internal/plausible"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/notify/alertmanager"
	"github.com/megawatch/megawatch/alerts/notify/pagerduty"
	"github.com/megawatch/megawatch/alerts/notify/webhook"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// Config of `megawatch alerts` (configs/alerts.yaml equals DefaultConfig).
type Config struct {
	NATS    natsx.Config        `yaml:"nats"`
	Streams natsx.StreamsConfig `yaml:"streams"`
	// Topology is the topology file; "" means the embedded configs/topology.yaml.
	Topology string `yaml:"topology"`
	// Scope limits this aggregator to one domain, e.g. "dc1.h1" (a hall
	// aggregator); "" aggregates everything.
	Scope string `yaml:"scope"`
	// SiteFromHalls makes this a site aggregator that consumes the hall
	// aggregators' hall rollups instead of node reports.
	SiteFromHalls bool `yaml:"site_from_halls"`

	Window         time.Duration `yaml:"window"`          // report window, as the collectors use (1s)
	Slot           time.Duration `yaml:"slot"`            // sample slot (100ms)
	StaleAfter     int           `yaml:"stale_after"`     // windows a silent node still counts with its last power
	Grace          time.Duration `yaml:"grace"`           // wait after a window's end for late reports
	AnalysisWindow time.Duration `yaml:"analysis_window"` // ramp / swing / oscillation window
	// OscillationLevels get the oscillation spectrum (one FFT of the
	// analysis window per domain per tick, the costliest part of a tick);
	// levels named by oscillation rules are added. Empty: every level.
	OscillationLevels []string `yaml:"oscillation_levels"`
	// Plausible bounds node reports: a report with a value beyond them is
	// never summed (counted as implausible); the same bounds as ingest's.
	Plausible plausible.Bounds `yaml:"plausible"`
	// ResolveMinCoverage: below this coverage a domain's telemetry is
	// degraded (its figures partly estimated) and firing alerts on it do
	// not resolve.
	ResolveMinCoverage float64 `yaml:"resolve_min_coverage"`
	// LagAlertAfter fires the megawatch_aggregator_lag alert when the
	// aggregator is this far behind its input; 0 disables it.
	LagAlertAfter time.Duration `yaml:"lag_alert_after"`
	// NodeModel estimates the node power of nodes whose collector sends
	// none: {node_type: dgxh100|dgxh200|dgxb200} or {host_w, per_gpu_w};
	// empty is the default node type (dgxh100).
	NodeModel NodeModelConfig `yaml:"node_model"`
	// InputBatch is how many messages the input pulls from the stream at
	// once (the memory bound of what waits in the process).
	InputBatch int `yaml:"input_batch"`
	// Replica names this process in its heartbeat and lag alerts; "" means
	// the host name.
	Replica string `yaml:"replica"`

	// RulesFile, when set, replaces Rules with the file's `rules:`.
	RulesFile string       `yaml:"rules_file"`
	Rules     []rules.Rule `yaml:"rules"`
	// ResolvedRetention keeps resolved alerts (re-sent to Alertmanager)
	// before they become inactive.
	ResolvedRetention time.Duration `yaml:"resolved_retention"`

	Notifiers NotifiersConfig `yaml:"notifiers"`
	KVBucket  string          `yaml:"kv_bucket"` // alert state (MEGAWATCH_ALERTS)
	HTTPAddr  string          `yaml:"http_addr"` // live page, /metrics, /healthz, /readyz; "" disables
}

// NotifiersConfig configures every notifier; unset ones are off.
type NotifiersConfig struct {
	Alertmanager alertmanager.Config     `yaml:"alertmanager"`
	PagerDuty    pagerduty.Config        `yaml:"pagerduty"`
	Webhook      webhook.Config          `yaml:"webhook"`
	NATS         Toggle                  `yaml:"nats"`
	Log          Toggle                  `yaml:"log"`
	Dispatch     notify.DispatcherConfig `yaml:"dispatch"`
	// LogOnly allows `megawatch alerts` to start with no paging notifier
	// (no Alertmanager URL, PagerDuty key or webhook): alerts then reach
	// only the log and NATS. Without it such a start is refused.
	LogOnly bool `yaml:"log_only"`
}

// Toggle switches a notifier without settings.
type Toggle struct {
	Enabled bool `yaml:"enabled"`
}

// DefaultKVBucket holds the (rule, domain) states.
const DefaultKVBucket = "MEGAWATCH_ALERTS"

// DefaultConfig is what configs/alerts.yaml says.
func DefaultConfig() Config {
	nc := natsx.DefaultConfig()
	nc.Name = "megawatch-alerts"
	return Config{
		NATS:               nc,
		Streams:            natsx.DefaultStreamsConfig(),
		Window:             time.Second,
		Slot:               100 * time.Millisecond,
		StaleAfter:         3,
		Grace:              250 * time.Millisecond,
		AnalysisWindow:     60 * time.Second,
		OscillationLevels:  []string{"site", "hall", "row"},
		Plausible:          plausible.Default(),
		ResolveMinCoverage: 0.9,
		LagAlertAfter:      10 * time.Second,
		InputBatch:         8192,
		Rules:              DefaultRules(),
		ResolvedRetention:  15 * time.Minute,
		Notifiers: NotifiersConfig{
			Alertmanager: alertmanager.DefaultConfig(),
			PagerDuty:    pagerduty.DefaultConfig(),
			NATS:         Toggle{Enabled: true},
			Log:          Toggle{Enabled: true},
			Dispatch:     notify.DefaultDispatcherConfig(),
		},
		KVBucket: DefaultKVBucket,
		HTTPAddr: "127.0.0.1:8080",
	}
}

// LoadConfig reads path over the defaults, loads rules_file if set, and
// validates everything; every problem names the file and key.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if path == "" {
		if err := cfg.LoadRulesFile(); err != nil {
			return cfg, err
		}
		return cfg, cfg.Validate()
	}
	err := config.LoadAndValidate(path, &cfg, func() error {
		if err := cfg.LoadRulesFile(); err != nil {
			return err
		}
		return cfg.Validate()
	})
	return cfg, err
}

// LoadRulesFile replaces Rules with the rules of RulesFile, if set.
func (c *Config) LoadRulesFile() error {
	if c.RulesFile == "" {
		return nil
	}
	var f rules.File
	if err := config.Load(c.RulesFile, &f); err != nil {
		return fmt.Errorf("rules_file: %w", err)
	}
	if err := rules.Validate(f.Rules, nil); err != nil {
		return config.Annotate(c.RulesFile, err)
	}
	c.Rules = f.Rules
	return nil
}

// Validate returns every problem at once with its key. It does not change c.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...))) }
	if err := c.NATS.Validate("nats"); err != nil {
		errs = append(errs, err)
	}
	if err := c.Streams.Validate("streams"); err != nil {
		errs = append(errs, err)
	}
	if c.Scope != "" {
		for _, p := range strings.FieldsFunc(c.Scope, func(r rune) bool { return r == '.' || r == '/' }) {
			if err := telemetry.ValidateToken(p); err != nil {
				bad("scope", "%v", err)
			}
		}
	}
	if c.Window <= 0 || c.Window%time.Millisecond != 0 {
		bad("window", "must be a positive whole number of milliseconds, got %s", c.Window)
	}
	if c.Slot <= 0 || (c.Window > 0 && c.Window%c.Slot != 0) || c.Slot%time.Millisecond != 0 {
		bad("slot", "must be positive, whole milliseconds and divide window %s, got %s", c.Window, c.Slot)
	}
	if c.StaleAfter < 0 || c.StaleAfter > 600 {
		bad("stale_after", "must be 0..600 windows, got %d", c.StaleAfter)
	}
	if c.Grace < 0 || (c.Window > 0 && c.Grace > 10*c.Window) {
		bad("grace", "must be 0..10 windows, got %s", c.Grace)
	}
	for i, l := range c.OscillationLevels {
		if err := telemetry.ValidateToken(l); err != nil {
			bad(fmt.Sprintf("oscillation_levels[%d]", i), "%v", err)
		}
	}
	if err := c.Plausible.Validate("plausible"); err != nil {
		errs = append(errs, err)
	}
	if c.AnalysisWindow < 2*time.Second || c.AnalysisWindow > 10*time.Minute || (c.Slot > 0 && c.AnalysisWindow%c.Slot != 0) {
		bad("analysis_window", "must be 2s..10m and a multiple of slot, got %s", c.AnalysisWindow)
	}
	if !(c.ResolveMinCoverage >= 0 && c.ResolveMinCoverage <= 1) {
		bad("resolve_min_coverage", "must be a fraction 0..1, got %v", c.ResolveMinCoverage)
	}
	if c.LagAlertAfter < 0 {
		bad("lag_alert_after", "must not be negative, got %s", c.LagAlertAfter)
	}
	errs = append(errs, c.NodeModel.validate("node_model")...)
	if c.InputBatch < 1 || c.InputBatch > 1<<20 {
		bad("input_batch", "must be 1..1048576, got %d", c.InputBatch)
	}
	if len(c.Rules) == 0 {
		bad("rules", "no rules (set rules or rules_file)")
	}
	if err := rules.Validate(c.Rules, nil); err != nil {
		errs = append(errs, err)
	}
	if c.ResolvedRetention < 0 {
		bad("resolved_retention", "must not be negative")
	}
	n := c.Notifiers
	errs = append(errs, n.Alertmanager.Validate("notifiers.alertmanager")...)
	errs = append(errs, n.PagerDuty.Validate("notifiers.pagerduty")...)
	errs = append(errs, n.Webhook.Validate("notifiers.webhook")...)
	d := n.Dispatch
	if d.QueueSize <= 0 || d.Timeout <= 0 || d.MinBackoff <= 0 || d.MaxBackoff < d.MinBackoff || d.MaxAttempts <= 0 {
		bad("notifiers.dispatch", "queue_size, timeout, min_backoff, max_attempts must be positive and max_backoff >= min_backoff")
	}
	if err := telemetry.ValidateToken(c.KVBucket); err != nil {
		bad("kv_bucket", "%v", err)
	}
	if err := config.ValidateListenAddr("http_addr", c.HTTPAddr); err != nil {
		errs = append(errs, err)
	}
	// Ratios (coverage) are 0..1 and counts are not negative: a negative
	// coverage threshold would never fire.
	for i, r := range c.Rules {
		lo, hi := 0.0, 0.0
		switch rules.Unit(r.Metric) {
		case "ratio":
			lo, hi = 0, 1
			if r.Metric == rules.MetricUnaccountedRatio {
				// node sum above the meter: a negative ratio
				lo = -1
			}
		case "count":
			lo, hi = 0, math.Inf(1)
		default:
			continue
		}
		for key, v := range map[string]*float64{"threshold": r.Threshold, "clear": r.Clear} {
			if v != nil && (*v < lo || *v > hi) {
				bad(fmt.Sprintf("rules[%d] (%s): %s", i, r.Name, key), "%g is outside %g..%g for %s (a %s)", *v, lo, hi, r.Metric, rules.Unit(r.Metric))
			}
		}
	}
	return errors.Join(errs...)
}

// LoadTopology loads c.Topology, or the embedded configs/topology.yaml when
// it is empty.
func (c Config) LoadTopology() (*topology.Topology, error) {
	return configs.LoadTopology(c.Topology)
}

// facilityOscLevels are the levels that get the spectrum of the 10 Hz
// facility estimate: those that oscillation rules with power: facility
// look at; all when such a rule selects domains by key only.
func (c Config) facilityOscLevels() (levels []string, all bool) {
	for _, r := range c.Rules {
		if r.Metric != rules.MetricOscillationMW || r.Figure() != rules.PowerFacility {
			continue
		}
		if r.Level == "" {
			return nil, true
		}
		if !slices.Contains(levels, r.Level) {
			levels = append(levels, r.Level)
		}
	}
	return levels, false
}

// oscLevels are the levels that get the oscillation spectrum: the
// configured ones plus every level an oscillation rule looks at; nil (all
// levels) when none are configured or a rule selects domains by key only.
func (c Config) oscLevels() []string {
	if len(c.OscillationLevels) == 0 {
		return nil
	}
	levels := slices.Clone(c.OscillationLevels)
	for _, r := range c.Rules {
		if r.Metric != rules.MetricOscillationMW {
			continue
		}
		if r.Level == "" {
			return nil
		}
		if !slices.Contains(levels, r.Level) {
			levels = append(levels, r.Level)
		}
	}
	return levels
}
