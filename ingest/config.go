// Package ingest writes node reports, rollups and alert events from NATS
// JetStream to InfluxDB: durable pull consumers shared by any number of
// processes, validation with dead-lettering, line protocol batches written
// with gzip through the v2 write API, acked only once InfluxDB accepted them.
package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/plausible"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// Config is the `megawatch ingest` configuration (configs/ingest.yaml).
type Config struct {
	NATS    natsx.Config        `yaml:"nats"`
	Streams natsx.StreamsConfig `yaml:"streams"`
	// Consumer is the durable consumer name; every ingest process with the
	// same name shares the work. The rollup consumer is Consumer+"_rollup".
	Consumer string `yaml:"consumer"`
	// Rollups also consumes MEGAWATCH_ROLLUP (rollups and alert events).
	Rollups bool `yaml:"rollups"`
	// Meters consumes MEGAWATCH_METER (facility meter reports) into the
	// meter measurement.
	Meters MetersConfig `yaml:"meters"`
	// Workers is the number of fetch/decode/encode/write loops per consumer.
	Workers int `yaml:"workers"`
	// BatchLines and BatchWait bound one write: whichever comes first.
	BatchLines int           `yaml:"batch_lines"`
	BatchWait  time.Duration `yaml:"batch_wait"`
	// MaxInflightBytes bounds the message bytes a process holds unacked
	// (prefetched plus batched); the backlog stays in the stream.
	MaxInflightBytes int `yaml:"max_inflight_bytes"`
	// MaxAckPending is set on the durable consumers; it must cover every
	// process's in-flight messages.
	MaxAckPending int           `yaml:"max_ack_pending"`
	AckWait       time.Duration `yaml:"ack_wait"`
	// GzipLevel 0 sends plain text; 1 (fastest) .. 9.
	GzipLevel int `yaml:"gzip_level"`
	// GPUEvery writes gpu and node points every N windows (energy-correct
	// means); 1 writes every window. Rollups are always full resolution.
	GPUEvery int `yaml:"gpu_every"`
	// FutureSkew is how far ahead of the ingest clock a window may end.
	FutureSkew time.Duration `yaml:"future_skew"`
	// RetryMin/RetryMax bound the exponential backoff of failed writes.
	RetryMin     time.Duration `yaml:"retry_min"`
	RetryMax     time.Duration `yaml:"retry_max"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ConflictProbe is how often lines routed to the dead-letter stream
	// for a remembered field type conflict are tried against InfluxDB
	// again (to see whether the conflict is gone).
	ConflictProbe time.Duration `yaml:"conflict_probe"`
	// StopTimeout bounds how long a stopping process tries to write what
	// it holds before NAKing it for immediate redelivery.
	StopTimeout time.Duration `yaml:"stop_timeout"`
	Targets     []Target      `yaml:"targets"`
	MetricsAddr string        `yaml:"metrics_addr"`
	EnsureDB    bool          `yaml:"ensure_db"`
	// TopologyFile names the levels that rollup paths are tagged with; ""
	// uses the embedded configs/topology.yaml.
	TopologyFile string `yaml:"topology_file"`
	LogLevel     string `yaml:"log_level"`
	// Plausible bounds node reports: a report with a value beyond them is
	// dead-lettered (implausible) and never written (docs/ingest.md).
	Plausible plausible.Bounds `yaml:"plausible"`
}

// MetersConfig is the meter report consumer (key meters).
type MetersConfig struct {
	// Enabled consumes MEGAWATCH_METER.
	Enabled bool `yaml:"enabled"`
	// Consumer is the durable consumer name on MEGAWATCH_METER, shared by
	// every ingest process like the power one; "" is <consumer>_meter.
	Consumer string `yaml:"consumer"`
	// EnsureStream creates (or updates) MEGAWATCH_METER at start, with
	// the streams: settings, as `megawatch meters` does; false waits for
	// the stream to exist.
	EnsureStream bool `yaml:"ensure_stream"`
}

// MeterConsumer is the durable consumer name on MEGAWATCH_METER.
func (c Config) MeterConsumer() string {
	if c.Meters.Consumer != "" {
		return c.Meters.Consumer
	}
	return c.Consumer + "_meter"
}

// Target is one destination: an InfluxDB URL (v2 write API; org/bucket, or
// bucket "db/rp" for InfluxDB 1.8) or a line-protocol file. Messages go to
// the first target whose subject filter matches.
type Target struct {
	Name      string   `yaml:"name"`
	Subjects  []string `yaml:"subjects"` // NATS subject filters; empty = everything
	URL       string   `yaml:"url"`
	Org       string   `yaml:"org"`
	Bucket    string   `yaml:"bucket"`
	TokenEnv  string   `yaml:"token_env"`
	TokenFile string   `yaml:"token_file"`
	File      string   `yaml:"file"`
	// Measurements sends a measurement (gpu, node, rollup, alert, meter) to its
	// own bucket (1.8: "db/rp", its own retention policy); measurements not
	// listed go to Bucket.
	Measurements map[string]string `yaml:"measurements"`
	// RetentionPolicies are created (or altered to match) by --ensure-db
	// on InfluxDB 1.x, in the database of Bucket.
	RetentionPolicies []RetentionPolicy `yaml:"retention_policies"`
}

// RetentionPolicy is an InfluxDB 1.x retention policy.
type RetentionPolicy struct {
	Name          string        `yaml:"name"`
	Duration      time.Duration `yaml:"duration"`       // 0 = keep forever
	ShardDuration time.Duration `yaml:"shard_duration"` // 0 = InfluxDB's default for the duration
}

// Measurements of DESIGN.md's InfluxDB schema, in lane-index order of measIndex.
var measurementNames = [...]string{measGPU, measNode, measRollup, measAlert, measMeter}

// Lanes returns the distinct buckets of t: Bucket first, then those of
// Measurements in measurement order. Each lane is one write request.
func (t Target) Lanes() []string {
	lanes := []string{t.Bucket}
	for _, m := range measurementNames {
		if b, ok := t.Measurements[m]; ok && b != "" && !slices.Contains(lanes, b) {
			lanes = append(lanes, b)
		}
	}
	return lanes
}

// laneOf returns the lane index of each measurement (measIndex order).
func (t Target) laneOf() [len(measurementNames)]int {
	var out [len(measurementNames)]int
	lanes := t.Lanes()
	for i, m := range measurementNames {
		if b, ok := t.Measurements[m]; ok && b != "" {
			out[i] = slices.Index(lanes, b)
		}
	}
	return out
}

// shardDuration is the configured shard duration of bucket's retention
// policy (1.x "db/rp"), or 0 when the config does not say.
func (t Target) shardDuration(bucket string) time.Duration {
	db, rp, ok := strings.Cut(bucket, "/")
	tdb, _, _ := strings.Cut(t.Bucket, "/")
	if !ok || db != tdb {
		return 0
	}
	for _, p := range t.RetentionPolicies {
		if p.Name == rp {
			if p.ShardDuration > 0 {
				return p.ShardDuration
			}
			return defaultShardDuration(p.Duration)
		}
	}
	return 0
}

// defaultShardDuration is InfluxDB 1.x's shard group duration for a
// retention policy of duration d.
func defaultShardDuration(d time.Duration) time.Duration {
	switch {
	case d == 0 || d >= 180*24*time.Hour:
		return 7 * 24 * time.Hour
	case d >= 2*24*time.Hour:
		return 24 * time.Hour
	}
	return time.Hour
}

// DefaultConfig is configs/ingest.yaml.
func DefaultConfig() Config {
	nc := natsx.DefaultConfig()
	nc.Name = "megawatch-ingest"
	return Config{
		NATS:             nc,
		Streams:          natsx.DefaultStreamsConfig(),
		Consumer:         "megawatch_ingest",
		Rollups:          true,
		Meters:           MetersConfig{Enabled: true, EnsureStream: true},
		Workers:          2,
		BatchLines:       5000,
		BatchWait:        time.Second,
		MaxInflightBytes: 64 << 20,
		MaxAckPending:    100000,
		AckWait:          30 * time.Second,
		GzipLevel:        1,
		GPUEvery:         1,
		FutureSkew:       5 * time.Minute,
		RetryMin:         100 * time.Millisecond,
		RetryMax:         10 * time.Second,
		WriteTimeout:     30 * time.Second,
		ConflictProbe:    time.Minute,
		StopTimeout:      10 * time.Second,
		Targets: []Target{{
			Name:     "default",
			URL:      "http://127.0.0.1:8086",
			Bucket:   "megawatch/autogen",
			TokenEnv: "INFLUX_TOKEN",
			// README's retention advice: GPU detail a week, node power a
			// month, rollups and alert events a year.
			Measurements: map[string]string{
				measGPU:    "megawatch/gpu_7d",
				measNode:   "megawatch/node_30d",
				measRollup: "megawatch/rollup_1y",
				measAlert:  "megawatch/rollup_1y",
				measMeter:  "megawatch/rollup_1y",
			},
			RetentionPolicies: []RetentionPolicy{
				{Name: "gpu_7d", Duration: 7 * 24 * time.Hour, ShardDuration: 24 * time.Hour},
				{Name: "node_30d", Duration: 30 * 24 * time.Hour, ShardDuration: 24 * time.Hour},
				{Name: "rollup_1y", Duration: 365 * 24 * time.Hour, ShardDuration: 7 * 24 * time.Hour},
			},
		}},
		MetricsAddr: "127.0.0.1:9102",
		LogLevel:    "info",
		Plausible:   plausible.Default(),
	}
}

// LoadConfig reads path over the defaults and validates it; every problem
// names the file and key.
func LoadConfig(path string) (Config, error) { return config.LoadValidated(path, DefaultConfig()) }

// Validate returns every problem at once, each with its YAML key. It does
// not read secrets (token env vars may be set only where ingest runs).
func (c Config) Validate() error {
	var errs []error
	bad := func(key, f string, a ...any) { errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(f, a...))) }
	if err := c.NATS.Validate("nats"); err != nil {
		errs = append(errs, err)
	}
	if err := config.ValidateListenAddr("metrics_addr", c.MetricsAddr); err != nil {
		errs = append(errs, err)
	}
	if err := c.Streams.Validate("streams"); err != nil {
		errs = append(errs, err)
	}
	if err := telemetry.ValidateToken(c.Consumer); err != nil {
		bad("consumer", "%v", err)
	}
	if c.Meters.Consumer != "" {
		if err := telemetry.ValidateToken(c.Meters.Consumer); err != nil {
			bad("meters.consumer", "%v", err)
		} else if c.Meters.Consumer == c.Consumer || c.Meters.Consumer == c.Consumer+"_rollup" {
			bad("meters.consumer", "%q is the name of the power or rollup consumer", c.Meters.Consumer)
		}
	}
	if c.Workers < 1 || c.Workers > 256 {
		bad("workers", "must be 1..256, got %d", c.Workers)
	}
	if c.BatchLines < 1 || c.BatchLines > 1_000_000 {
		bad("batch_lines", "must be 1..1000000, got %d", c.BatchLines)
	}
	if c.BatchWait <= 0 {
		bad("batch_wait", "must be positive")
	}
	if c.MaxInflightBytes < 64<<10 {
		bad("max_inflight_bytes", "must be at least 65536, got %d", c.MaxInflightBytes)
	}
	if c.MaxAckPending < 1 {
		bad("max_ack_pending", "must be positive")
	}
	if c.AckWait < time.Second {
		bad("ack_wait", "must be at least 1s")
	}
	if c.GzipLevel < 0 || c.GzipLevel > 9 {
		bad("gzip_level", "must be 0 (off) .. 9, got %d", c.GzipLevel)
	}
	if c.GPUEvery < 1 || c.GPUEvery > 3600 {
		bad("gpu_every", "must be 1..3600, got %d", c.GPUEvery)
	}
	if c.FutureSkew < 0 {
		bad("future_skew", "must not be negative")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		bad("retry_min", "must be positive and at most retry_max")
	}
	if c.WriteTimeout <= 0 {
		bad("write_timeout", "must be positive")
	}
	if c.ConflictProbe <= 0 {
		bad("conflict_probe", "must be positive")
	}
	if c.StopTimeout < 0 {
		bad("stop_timeout", "must not be negative")
	}
	if len(c.Targets) == 0 {
		bad("targets", "at least one target is required")
	}
	names := map[string]bool{}
	for i, t := range c.Targets {
		if err := t.validate(fmt.Sprintf("targets[%d]", i)); err != nil {
			errs = append(errs, err)
		}
		if names[t.Name] {
			bad(fmt.Sprintf("targets[%d].name", i), "duplicate name %q", t.Name)
		}
		names[t.Name] = true
	}
	if err := c.Plausible.Validate("plausible"); err != nil {
		errs = append(errs, err)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("log_level", "want debug, info, warn or error, got %q", c.LogLevel)
	}
	return errors.Join(errs...)
}

func (t Target) validate(key string) error {
	var errs []error
	bad := func(k, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(f, a...)))
	}
	if t.Name == "" {
		bad("name", "required")
	}
	for i, s := range t.Subjects {
		if !validFilter(s) {
			bad(fmt.Sprintf("subjects[%d]", i), "invalid subject filter %q", s)
		}
	}
	switch {
	case t.URL != "" && t.File != "":
		bad("url", "set only one of url and file")
	case t.URL == "" && t.File == "":
		bad("url", "one of url and file is required")
	case t.URL != "":
		if !strings.HasPrefix(t.URL, "http://") && !strings.HasPrefix(t.URL, "https://") {
			bad("url", "must start with http:// or https://, got %q", t.URL)
		}
		if t.Bucket == "" {
			bad("bucket", "required (InfluxDB 1.8: db/rp)")
		}
		if t.TokenEnv != "" && t.TokenFile != "" {
			bad("token_env", "set only one of token_env and token_file")
		}
	}
	for m, b := range t.Measurements {
		if !slices.Contains(measurementNames[:], m) {
			bad("measurements."+m, "unknown measurement (want gpu, node, rollup, alert or meter)")
		}
		if b == "" {
			bad("measurements."+m, "empty bucket")
		}
	}
	seen := map[string]bool{}
	for i, p := range t.RetentionPolicies {
		k := fmt.Sprintf("retention_policies[%d]", i)
		if p.Name == "" || strings.ContainsAny(p.Name, "\"\n") {
			bad(k+".name", "required, without quotes or newlines")
		}
		if seen[p.Name] {
			bad(k+".name", "duplicate %q", p.Name)
		}
		seen[p.Name] = true
		if p.Duration != 0 && p.Duration < time.Hour {
			bad(k+".duration", "must be 0 (forever) or at least 1h, got %s", p.Duration)
		}
		if p.ShardDuration < 0 || (p.ShardDuration > 0 && p.ShardDuration < time.Hour) {
			bad(k+".shard_duration", "must be 0 (InfluxDB's default) or at least 1h, got %s", p.ShardDuration)
		}
	}
	return errors.Join(errs...)
}

// validFilter reports whether s is a NATS subject filter (tokens, '*', '>' last).
func validFilter(s string) bool {
	toks := strings.Split(s, ".")
	for i, tk := range toks {
		switch {
		case tk == "*":
		case tk == ">":
			if i != len(toks)-1 {
				return false
			}
		case telemetry.ValidateToken(tk) != nil:
			return false
		}
	}
	return true
}

// subjectMatches reports whether subject matches the NATS filter.
func subjectMatches(filter, subject string) bool {
	for {
		fi := strings.IndexByte(filter, '.')
		si := strings.IndexByte(subject, '.')
		ft, st := filter, subject
		if fi >= 0 {
			ft = filter[:fi]
		}
		if si >= 0 {
			st = subject[:si]
		}
		switch {
		case ft == ">":
			return true
		case ft != "*" && ft != st:
			return false
		}
		if fi < 0 || si < 0 {
			return fi < 0 && si < 0
		}
		filter, subject = filter[fi+1:], subject[si+1:]
	}
}
