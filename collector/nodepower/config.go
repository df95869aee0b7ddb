package nodepower

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// Source names in Config.Sources.
const (
	SourceRedfish = "redfish"
	SourceHwmon   = "hwmon"
	SourceModel   = "model"
)

// Config is the node_power section of the collector config.
type Config struct {
	// Sources in order of preference; the first with a fresh figure for a
	// window is used. Empty: no node power (the fields stay absent).
	Sources []string      `yaml:"sources"`
	Redfish RedfishConfig `yaml:"redfish"`
	Hwmon   HwmonConfig   `yaml:"hwmon"`
	RAPL    RAPLConfig    `yaml:"rapl"`
	Model   ModelConfig   `yaml:"model"`
}

// PollConfig is how one source is polled.
type PollConfig struct {
	// Interval between reads; 0 = the collector window. Never shorter than
	// the window.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one read; shorter than the interval.
	Timeout time.Duration `yaml:"timeout"`
	// MaxAge: a reading counts for a window when it was taken at most this
	// long before the window end; 0 = the interval.
	MaxAge time.Duration `yaml:"max_age"`
	// MaxBackoff caps the wait after consecutive errors (the interval
	// doubles per error).
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// RedfishConfig is the BMC source.
type RedfishConfig struct {
	PollConfig `yaml:",inline"`
	// URL of the BMC, https://host[:port]; the service root is
	// /redfish/v1 under it.
	URL string `yaml:"url"`
	// Chassis Id to read (e.g. "1U"); "" = the node's own: the first member
	// of /redfish/v1/Chassis not contained in another that links to its
	// power.
	Chassis string `yaml:"chassis"`
	// User and the password from an env var or a file (basic auth).
	User         string `yaml:"user"`
	PasswordEnv  string `yaml:"password_env"`
	PasswordFile string `yaml:"password_file"`
	// CAFile verifies the BMC's certificate; InsecureSkipVerify turns
	// verification off (self-signed BMC certificates) and must be explicit.
	CAFile             string `yaml:"ca_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// HwmonConfig is the in-band ACPI power meter.
type HwmonConfig struct {
	PollConfig `yaml:",inline"`
	SysfsRoot  string `yaml:"sysfs_root"` // "/sys"; tests use a fixture tree
}

// RAPLConfig is the CPU component (package + DRAM energy).
type RAPLConfig struct {
	PollConfig `yaml:",inline"`
	Enabled    bool   `yaml:"enabled"`
	SysfsRoot  string `yaml:"sysfs_root"`
}

// ModelConfig is the estimate: host_w + per_gpu_w × GPUs + GPU power.
type ModelConfig struct {
	// NodeType picks the defaults: auto (from the GPU model name), dgxh100,
	// dgxh200, dgxb200.
	NodeType string `yaml:"node_type"`
	// HostW and PerGPUW override the node type's values when > 0.
	HostW   float64 `yaml:"host_w"`
	PerGPUW float64 `yaml:"per_gpu_w"`
}

// DefaultConfig is the estimate only: every node reports an estimated
// node figure (source MODEL) until a BMC or power meter is configured.
func DefaultConfig() Config {
	return Config{
		Sources: []string{SourceModel},
		Redfish: RedfishConfig{PollConfig: PollConfig{Timeout: 900 * time.Millisecond, MaxBackoff: time.Minute}},
		Hwmon:   HwmonConfig{PollConfig: PollConfig{Timeout: 200 * time.Millisecond, MaxBackoff: time.Minute}, SysfsRoot: "/sys"},
		RAPL:    RAPLConfig{PollConfig: PollConfig{Timeout: 200 * time.Millisecond, MaxBackoff: time.Minute}, SysfsRoot: "/sys"},
		Model:   ModelConfig{NodeType: "auto"},
	}
}

// Validate returns every problem, each with its key under prefix (e.g.
// "node_power"). window is the collector's window. It never changes c.
func (c Config) Validate(prefix string, window time.Duration) error {
	var errs []error
	bad := func(key, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, key, fmt.Sprintf(f, a...)))
	}
	seen := map[string]bool{}
	for i, s := range c.Sources {
		switch s {
		case SourceRedfish, SourceHwmon, SourceModel:
		default:
			bad(fmt.Sprintf("sources[%d]", i), "want redfish, hwmon or model, got %q", s)
		}
		if seen[s] {
			bad(fmt.Sprintf("sources[%d]", i), "%q listed twice", s)
		}
		seen[s] = true
	}
	if slices.Contains(c.Sources, SourceRedfish) {
		r := c.Redfish
		r.PollConfig.validate("redfish", window, bad)
		u, err := url.Parse(r.URL)
		switch {
		case r.URL == "":
			bad("redfish.url", "required when sources lists redfish")
		case err != nil:
			bad("redfish.url", "%v", err)
		case u.Scheme != "https" || u.Host == "":
			bad("redfish.url", "want https://host[:port], got %q", redactURL(u))
		case u.User != nil:
			bad("redfish.url", "must not hold credentials: use redfish.user and redfish.password_env or password_file")
		}
		if r.User != "" && r.PasswordEnv == "" && r.PasswordFile == "" {
			bad("redfish.user", "set redfish.password_env or redfish.password_file")
		}
		if r.PasswordEnv != "" && r.PasswordFile != "" {
			bad("redfish.password_env", "set only one of password_env and password_file")
		}
		if r.CAFile != "" && r.InsecureSkipVerify {
			bad("redfish.insecure_skip_verify", "set either ca_file or insecure_skip_verify, not both")
		}
	}
	if slices.Contains(c.Sources, SourceHwmon) {
		c.Hwmon.PollConfig.validate("hwmon", window, bad)
		if c.Hwmon.SysfsRoot == "" {
			bad("hwmon.sysfs_root", "required")
		}
	}
	if c.RAPL.Enabled {
		c.RAPL.PollConfig.validate("rapl", window, bad)
		if c.RAPL.SysfsRoot == "" {
			bad("rapl.sysfs_root", "required")
		}
	}
	if slices.Contains(c.Sources, SourceModel) {
		m := c.Model
		if _, ok := nodeTypes[m.NodeType]; !ok && m.NodeType != "auto" {
			bad("model.node_type", "want auto, %s; got %q", nodeTypeNames(), m.NodeType)
		}
		if !(m.HostW >= 0 && m.HostW <= 100_000) {
			bad("model.host_w", "must be 0 (node type default) .. 100000")
		}
		if !(m.PerGPUW >= 0 && m.PerGPUW <= 10_000) {
			bad("model.per_gpu_w", "must be 0 (node type default) .. 10000")
		}
	}
	return errors.Join(errs...)
}

func (p PollConfig) validate(key string, window time.Duration, bad func(string, string, ...any)) {
	sub := key
	iv := p.interval(window)
	if p.Interval != 0 && p.Interval < window {
		bad(sub+".interval", "must be 0 (the window) or at least the window (%s), got %s", window, p.Interval)
	}
	if p.Timeout <= 0 || p.Timeout >= iv {
		bad(sub+".timeout", "must be positive and shorter than the interval (%s), got %s", iv, p.Timeout)
	}
	if p.MaxAge != 0 && p.MaxAge < iv {
		bad(sub+".max_age", "must be 0 (the interval) or at least the interval (%s), got %s", iv, p.MaxAge)
	}
	if p.MaxBackoff < iv {
		bad(sub+".max_backoff", "must be at least the interval (%s), got %s", iv, p.MaxBackoff)
	}
}

func (p PollConfig) interval(window time.Duration) time.Duration {
	if p.Interval > 0 {
		return p.Interval
	}
	return window
}

func (p PollConfig) maxAge(window time.Duration) time.Duration {
	if p.MaxAge > 0 {
		return p.MaxAge
	}
	return p.interval(window)
}

// redactURL prints a URL without its user info.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	return c.String()
}
