// Package collector reads GPU power and thermals through NVML, summarises
// them per wall-clock-aligned window and publishes one NodeReport per window
// to NATS JetStream, buffering (in memory or on disk) while NATS is away.
// See docs/collector.md.
package collector

import (
	"errors"
	"fmt"
	"time"

	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// maxSlots is the most slots a window may have (slot_missing_mask is 32 bits).
const maxSlots = 32

// LocationConfig places a node that is not in the topology file.
type LocationConfig struct {
	Site string `yaml:"site"`
	Hall string `yaml:"hall"`
	Row  string `yaml:"row"`
	Rack string `yaml:"rack"`
}

// Config is the collector's configuration (configs/collector.yaml).
type Config struct {
	NATS natsx.Config `yaml:"nats"`
	// Streams and EnsureStream: when EnsureStream is set the collector
	// creates or updates MEGAWATCH_POWER with Streams on start.
	Streams      natsx.StreamsConfig `yaml:"streams"`
	EnsureStream bool                `yaml:"ensure_stream"`
	// Node is this node's name; "" means the host name.
	Node string `yaml:"node"`
	// TopologyFile is where the node is looked up; "" means the embedded
	// configs/topology.yaml.
	TopologyFile string `yaml:"topology_file"`
	// Location, when set, places the node explicitly (the topology is not read).
	Location *LocationConfig `yaml:"location"`
	// Window is the report interval and Slot the instantaneous-power sampling
	// interval; both align to the wall clock.
	Window time.Duration `yaml:"window"`
	Slot   time.Duration `yaml:"slot"`
	// CallTimeout is how long one GPU's NVML request may take before the
	// GPU is reported with health timeout.
	CallTimeout time.Duration `yaml:"call_timeout"`
	// BufferMax and BufferMaxBytes bound the offline buffer (reports and
	// encoded bytes); beyond them the oldest reports are dropped.
	BufferMax      int    `yaml:"buffer_max"`
	BufferMaxBytes int64  `yaml:"buffer_max_bytes"`
	BufferDir      string `yaml:"buffer_dir"` // "" keeps the buffer in memory
	// MaxPending bounds the publishes awaiting a JetStream ack; AckTimeout
	// is how long one may wait before it is sent again.
	MaxPending int           `yaml:"max_pending"`
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// FlushTimeout is how long Run keeps publishing after its context ends.
	FlushTimeout time.Duration `yaml:"flush_timeout"`
	MetricsAddr  string        `yaml:"metrics_addr"`
	LogLevel     string        `yaml:"log_level"`
	// Sim configures the simulated GPUs of `megawatch collector --sim`.
	Sim sim.Config `yaml:"sim"`
	// NodePower configures the whole-node power sources read beside the
	// GPUs (BMC/Redfish, hwmon, RAPL, the model).
	NodePower nodepower.Config `yaml:"node_power"`

	// Version goes into the inventory reports; set by the binary.
	Version string `yaml:"-"`
}

// DefaultConfig is equal to configs/collector.yaml.
func DefaultConfig() Config {
	n := natsx.DefaultConfig()
	n.Name = "megawatch-collector"
	return Config{
		NATS:           n,
		Streams:        natsx.DefaultStreamsConfig(),
		Window:         time.Second,
		Slot:           100 * time.Millisecond,
		CallTimeout:    500 * time.Millisecond,
		BufferMax:      900, // 15 minutes of 1 s windows
		BufferMaxBytes: 16 << 20,
		MaxPending:     64,
		AckTimeout:     5 * time.Second,
		FlushTimeout:   2 * time.Second,
		MetricsAddr:    "127.0.0.1:9401", // loopback: set the address Prometheus scrapes (k8s: ":9401")
		LogLevel:       "info",
		Sim:            sim.DefaultConfig(),
		NodePower:      nodepower.DefaultConfig(),
	}
}

// LoadConfig reads path over the defaults and validates the result; every
// problem is reported, each with the file and key.
func LoadConfig(path string) (Config, error) { return config.LoadValidated(path, DefaultConfig()) }

// Validate returns every problem at once, each prefixed with its YAML key.
// It never changes the config.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...))) }
	if err := c.NATS.Validate("nats"); err != nil {
		errs = append(errs, err)
	}
	if err := config.ValidateListenAddr("metrics_addr", c.MetricsAddr); err != nil {
		errs = append(errs, err)
	}
	if c.EnsureStream {
		if err := c.Streams.Validate("streams"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.Sim.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Node != "" {
		if err := telemetry.ValidateToken(c.Node); err != nil {
			bad("node", "%v", err)
		}
	}
	if l := c.Location; l != nil {
		for k, v := range map[string]string{"site": l.Site, "hall": l.Hall, "row": l.Row, "rack": l.Rack} {
			if err := telemetry.ValidateToken(v); err != nil {
				bad("location."+k, "%v", err)
			}
		}
		if c.TopologyFile != "" {
			bad("location", "set either location or topology_file, not both")
		}
	}
	switch {
	case c.Slot <= 0:
		bad("slot", "must be positive, got %s", c.Slot)
	case c.Window <= 0:
		bad("window", "must be positive, got %s", c.Window)
	case c.Window%c.Slot != 0:
		bad("window", "must be a whole number of slots (slot %s), got %s", c.Slot, c.Window)
	case c.Window/c.Slot > maxSlots:
		bad("window", "at most %d slots per window, got %d", maxSlots, c.Window/c.Slot)
	case time.Second%c.Window != 0 && c.Window%time.Second != 0:
		bad("window", "must divide a second or be whole seconds (windows align to the wall clock), got %s", c.Window)
	}
	if c.Window > 0 {
		if err := c.NodePower.Validate("node_power", c.Window); err != nil {
			errs = append(errs, err)
		}
	}
	if c.CallTimeout <= 0 || (c.Window > 0 && c.CallTimeout >= c.Window) {
		bad("call_timeout", "must be positive and shorter than window (%s), got %s", c.Window, c.CallTimeout)
	}
	if c.BufferMax < 1 {
		bad("buffer_max", "must be at least 1, got %d", c.BufferMax)
	}
	if c.BufferMaxBytes < 4096 {
		bad("buffer_max_bytes", "must be at least 4096, got %d", c.BufferMaxBytes)
	}
	if c.MaxPending < 1 || c.MaxPending > 4096 {
		bad("max_pending", "must be 1..4096, got %d", c.MaxPending)
	}
	if c.AckTimeout <= 0 {
		bad("ack_timeout", "must be positive, got %s", c.AckTimeout)
	}
	if c.FlushTimeout < 0 {
		bad("flush_timeout", "must not be negative, got %s", c.FlushTimeout)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	return errors.Join(errs...)
}

// slots is the number of slots per window.
func (c Config) slots() int { return int(c.Window / c.Slot) }
