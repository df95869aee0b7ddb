package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/nats-io/nats.go/jetstream"
)

// store persists (rule, domain) states in the KV bucket, one key per
// fingerprint, from its own goroutine so that a slow or absent NATS never
// stalls a tick. Inactive states are deleted. The latest state of a key
// wins; failed writes are retried.
type store struct {
	kv      jetstream.KeyValue
	logger  *slog.Logger
	mu      sync.Mutex
	pending map[string]rules.Record
	wake    chan struct{}
	idle    chan struct{} // closed and replaced whenever pending drains
}

func newStore(kv jetstream.KeyValue, logger *slog.Logger) *store {
	return &store{kv: kv, logger: logger, pending: map[string]rules.Record{}, wake: make(chan struct{}, 1), idle: make(chan struct{})}
}

// load reads every record.
func (s *store) load(ctx context.Context) ([]rules.Record, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("kv list: %w", err)
	}
	var out []rules.Record
	for k := range keys.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return nil, fmt.Errorf("kv get %s: %w", k, err)
		}
		var r rules.Record
		if err := json.Unmarshal(e.Value(), &r); err != nil || r.Fingerprint != k {
			s.logger.Warn("ignoring bad alert state record", "key", k, "err", err)
			continue
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *store) put(recs []rules.Record) {
	s.mu.Lock()
	for _, r := range recs {
		s.pending[r.Fingerprint] = r
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// waitIdle blocks until every queued record is written (tests).
func (s *store) waitIdle(ctx context.Context) error {
	for {
		s.mu.Lock()
		n, idle := len(s.pending), s.idle
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-idle:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *store) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.flush(fctx)
			cancel()
			return
		case <-s.wake:
		case <-time.After(time.Second): // retry failed writes
		}
		s.flush(ctx)
	}
}

func (s *store) flush(ctx context.Context) {
	s.mu.Lock()
	batch := s.pending
	s.pending = map[string]rules.Record{}
	s.mu.Unlock()
	failed := map[string]rules.Record{}
	for k, r := range batch {
		var err error
		if r.State == rules.StateInactive {
			err = s.kv.Delete(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				err = nil
			}
		} else {
			b, _ := json.Marshal(r)
			_, err = s.kv.Put(ctx, k, b)
		}
		if err != nil {
			failed[k] = r
			s.logger.Warn("alert state write failed", "key", k, "rule", r.Rule, "domain", r.Domain, "err", err)
		}
	}
	s.mu.Lock()
	for k, r := range failed {
		if _, newer := s.pending[k]; !newer {
			s.pending[k] = r
		}
	}
	if len(s.pending) == 0 {
		close(s.idle)
		s.idle = make(chan struct{})
	}
	s.mu.Unlock()
}
