// Package meters is `megawatch meters`: it polls facility meters (rack PDUs
// over SNMP, branch-circuit monitors and switchgear over Modbus TCP), defined
// in the topology on the domains they measure, and publishes one
// MeterReport per meter per window to JetStream. See docs/meters.md.
package meters

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/natsx"
)

// Config is the configuration of `megawatch meters` (configs/meters.yaml).
type Config struct {
	NATS natsx.Config `yaml:"nats"`
	// Streams sizes MEGAWATCH_METER, created or updated on start when
	// EnsureStream is set.
	Streams      natsx.StreamsConfig `yaml:"streams"`
	EnsureStream bool                `yaml:"ensure_stream"`
	// TopologyFile holds the meter definitions; "" means the embedded
	// configs/topology.yaml.
	TopologyFile string `yaml:"topology_file"`
	// Scope limits this poller to the meters of one domain's subtree, e.g.
	// "dc1.h1"; "" polls every meter of the topology.
	Scope string `yaml:"scope"`
	// Interval is the window: every meter is read once per interval, aligned
	// to the wall clock (so that two pollers publish the same windows).
	Interval time.Duration `yaml:"interval"`
	// Timeout is how long one meter read may take (a meter's own timeout in
	// the topology overrides it); must be below Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Workers bounds the meters read at once.
	Workers int `yaml:"workers"`
	// BackoffMax caps the exponential backoff of a failing meter: after n
	// failures in a row it is read again 2^(n-1) windows later (1, 2, 4, …),
	// at most BackoffMax later. It is reported stale every window meanwhile.
	BackoffMax time.Duration `yaml:"backoff_max"`
	// PublishTimeout bounds one JetStream publish.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// Poller names this process in reports (default: the host name).
	Poller      string `yaml:"poller"`
	MetricsAddr string `yaml:"metrics_addr"`
	LogLevel    string `yaml:"log_level"`

	// Sim is the node model of `megawatch meters --sim`: the same keys as
	// the collector's sim: section (give it the values of the simulated
	// collectors, loadgen or demo whose nodes the meters cover), with its
	// facility faults (meter_silent). SimMeters: which meters, losses and
	// non-IT load. Both are ignored without --sim.
	Sim       sim.Config      `yaml:"sim"`
	SimMeters SimMetersConfig `yaml:"sim_meters"`

	// Version goes into the reports; set by the binary.
	Version string `yaml:"-"`
}

// DefaultConfig is equal to configs/meters.yaml.
func DefaultConfig() Config {
	n := natsx.DefaultConfig()
	n.Name = "megawatch-meters"
	return Config{
		NATS:           n,
		Streams:        natsx.DefaultStreamsConfig(),
		EnsureStream:   true,
		Interval:       time.Second,
		Timeout:        800 * time.Millisecond,
		Workers:        64,
		BackoffMax:     30 * time.Second,
		PublishTimeout: 2 * time.Second,
		MetricsAddr:    "127.0.0.1:9403",
		LogLevel:       "info",
		Sim:            sim.DefaultConfig(),
		SimMeters:      DefaultSimMetersConfig(),
	}
}

// LoadConfig reads path over the defaults and validates it.
func LoadConfig(path string) (Config, error) { return config.LoadValidated(path, DefaultConfig()) }

// Validate returns every problem at once, each with its key. It never
// changes the config.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...))) }
	if err := c.NATS.Validate("nats"); err != nil {
		errs = append(errs, err)
	}
	if c.EnsureStream {
		if err := c.Streams.Validate("streams"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Interval < 100*time.Millisecond || c.Interval > time.Hour {
		bad("interval", "must be between 100ms and 1h, got %v", c.Interval)
	}
	if c.Timeout <= 0 || c.Timeout >= c.Interval {
		bad("timeout", "must be positive and below interval (%v), got %v", c.Interval, c.Timeout)
	}
	if c.Workers < 1 || c.Workers > 10000 {
		bad("workers", "must be 1..10000, got %d", c.Workers)
	}
	if c.BackoffMax < c.Interval {
		bad("backoff_max", "must be at least interval (%v), got %v", c.Interval, c.BackoffMax)
	}
	if c.PublishTimeout <= 0 {
		bad("publish_timeout", "must be positive, got %v", c.PublishTimeout)
	}
	if c.TopologyFile != "" {
		if _, err := os.Stat(c.TopologyFile); err != nil {
			bad("topology_file", "%v", err)
		}
	}
	if err := c.Sim.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.SimMeters.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error", "":
	default:
		bad("log_level", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return errors.Join(errs...)
}

// PollerName is Poller, or the host name.
func (c Config) PollerName() string {
	if c.Poller != "" {
		return c.Poller
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "meters"
	}
	return h
}
