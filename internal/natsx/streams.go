package natsx

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamsConfig sizes the JetStream streams megawatch uses.
type StreamsConfig struct {
	Replicas         int           `yaml:"replicas"`            // 1 for a single server, 3 in a cluster
	MaxAge           time.Duration `yaml:"max_age"`             // power and rollup retention (default 24h)
	DuplicateWindow  time.Duration `yaml:"duplicate_window"`    // Nats-Msg-Id dedup window (default 2m)
	MaxBytes         int64         `yaml:"max_bytes"`           // per stream; -1 = unlimited
	DeadLetterMaxAge time.Duration `yaml:"dead_letter_max_age"` // default 7 days
}

// DefaultStreamsConfig is R1, 24 h, 2 min dedup.
func DefaultStreamsConfig() StreamsConfig {
	return StreamsConfig{Replicas: 1, MaxAge: 24 * time.Hour, DuplicateWindow: 2 * time.Minute, MaxBytes: -1, DeadLetterMaxAge: 7 * 24 * time.Hour}
}

// Validate returns every problem with its key.
func (c StreamsConfig) Validate(key string) error {
	var errs []error
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("%s.replicas: must be 1..5, got %d", key, c.Replicas))
	}
	if c.MaxAge <= 0 {
		errs = append(errs, fmt.Errorf("%s.max_age: must be positive", key))
	}
	if c.DuplicateWindow <= 0 || (c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge) {
		errs = append(errs, fmt.Errorf("%s.duplicate_window: must be positive and at most max_age", key))
	}
	if c.DeadLetterMaxAge <= 0 {
		errs = append(errs, fmt.Errorf("%s.dead_letter_max_age: must be positive", key))
	}
	return errors.Join(errs...)
}

// PowerStream is the MEGAWATCH_POWER stream config.
func (c StreamsConfig) PowerStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        telemetry.StreamPower,
		Description: "megawatch node power reports",
		Subjects:    []string{telemetry.PowerWildcard},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.maxBytes(),
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
		Discard:     jetstream.DiscardOld,
	}
}

// RollupStream is the MEGAWATCH_ROLLUP stream config (rollups and alert events).
func (c StreamsConfig) RollupStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        telemetry.StreamRollup,
		Description: "megawatch hierarchy rollups and alert events",
		Subjects:    []string{telemetry.RollupWildcard, telemetry.AlertWildcard},
		Storage:     jetstream.FileStorage,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.maxBytes(),
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
	}
}

// MeterStream is the MEGAWATCH_METER stream config: facility meter reports
// (`megawatch meters`), a stream of its own so that its retention and
// consumers are independent of the node power stream (meters are a few
// thousand messages per second at most). Dedup by Nats-Msg-Id
// meter:<meter>:<window_end_ms> (":stale" appended for stale reports) over
// DuplicateWindow lets two pollers of the same meters run for HA and store
// one fresh report per meter and window.
func (c StreamsConfig) MeterStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        telemetry.StreamMeter,
		Description: "megawatch facility meter reports (PDUs, branch circuits, switchgear)",
		Subjects:    []string{telemetry.MeterWildcard},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      c.MaxAge,
		MaxBytes:    c.maxBytes(),
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
		Discard:     jetstream.DiscardOld,
	}
}

// DeadLetterStream keeps dead-lettered messages for inspection.
func (c StreamsConfig) DeadLetterStream() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        telemetry.StreamDeadLetter,
		Description: "megawatch messages that could not be ingested, with the reason in headers",
		Subjects:    []string{telemetry.DeadLetterWildcard},
		Storage:     jetstream.FileStorage,
		MaxAge:      c.DeadLetterMaxAge,
		MaxBytes:    c.maxBytes(),
		Replicas:    c.Replicas,
	}
}

func (c StreamsConfig) maxBytes() int64 {
	if c.MaxBytes == 0 {
		return -1
	}
	return c.MaxBytes
}

// EnsureStream creates or updates one stream; calling it again is harmless.
// A stream that already has these settings is left alone (no update
// request): every process ensures the streams it uses at start, and an
// update racing a consumer creation on the same stream is a data race
// inside nats-server 2.15's file store (seen under -race in the demo).
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if s, err := js.Stream(ctx, cfg.Name); err == nil && sameStreamSettings(s.CachedInfo().Config, cfg) {
		return s, nil
	}
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// sameStreamSettings reports whether the server's config has every setting
// megawatch's stream configs set (the server fills in the rest).
func sameStreamSettings(have, want jetstream.StreamConfig) bool {
	if want.Retention == 0 {
		want.Retention = jetstream.LimitsPolicy
	}
	if want.Replicas == 0 {
		want.Replicas = 1
	}
	if want.MaxAge == 0 {
		want.MaxAge = have.MaxAge // 0 is "no limit"; compared below only when set
	}
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Storage == want.Storage && have.Retention == want.Retention && have.MaxAge == want.MaxAge &&
		have.MaxBytes == want.MaxBytes && (want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		have.Replicas == want.Replicas && have.Discard == want.Discard
}

// EnsureStreams sets up MEGAWATCH_POWER, MEGAWATCH_ROLLUP,
// MEGAWATCH_DEADLETTER and MEGAWATCH_METER.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamsConfig) error {
	for _, sc := range []jetstream.StreamConfig{c.PowerStream(), c.RollupStream(), c.DeadLetterStream(), c.MeterStream()} {
		if _, err := EnsureStream(ctx, js, sc); err != nil {
			return err
		}
	}
	return nil
}
