package facilitytest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// What the test sees on NATS: every rollup, meter report and node report,
// by core subscriptions beside the components' own JetStream consumers.

// recorder keeps every rollup published on megawatch.v1.rollup.>, by domain
// and window.
type recorder struct {
	mu  sync.Mutex
	by  map[string]map[int64]*telemetry.Rollup // domain key → window end ns → rollup
	bad []string
}

func newRecorder(t testing.TB, nc *nats.Conn) *recorder {
	r := &recorder{by: map[string]map[int64]*telemetry.Rollup{}}
	sub, err := nc.Subscribe(telemetry.RollupPrefix+".>", func(m *nats.Msg) {
		var ru telemetry.Rollup
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := proto.Unmarshal(m.Data, &ru); err != nil {
			r.bad = append(r.bad, fmt.Sprintf("%s: %v", m.Subject, err))
			return
		}
		k := strings.Join(ru.Path, "/")
		if r.by[k] == nil {
			r.by[k] = map[int64]*telemetry.Rollup{}
		}
		r.by[k][ru.WindowEndUnixNs] = &ru
	})
	if err != nil {
		t.Fatal(err)
	}
	unbounded(t, nc, sub)
	return r
}

// windowsSince are the window ends after since that every domain of keys
// has a rollup for, newest first.
func (r *recorder) windowsSince(since time.Time, keys []string) ([]int64, map[int64]map[string]*telemetry.Rollup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[int64]map[string]*telemetry.Rollup{}
	var ends []int64
	if len(keys) == 0 {
		return nil, out
	}
	for end, ru := range r.by[keys[0]] {
		if end <= since.UnixNano() {
			continue
		}
		row := map[string]*telemetry.Rollup{keys[0]: ru}
		for _, k := range keys[1:] {
			if o := r.by[k][end]; o != nil {
				row[k] = o
			}
		}
		if len(row) == len(keys) {
			out[end] = row
			ends = append(ends, end)
		}
	}
	slices.Sort(ends)
	slices.Reverse(ends) // newest first
	return ends, out
}

// series is domain key's rollups with window end in (from, to], oldest first.
func (r *recorder) series(key string, from, to int64) []*telemetry.Rollup {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*telemetry.Rollup
	for end := from + int64(window); end <= to; end += int64(window) {
		if ru := r.by[key][end]; ru != nil {
			out = append(out, ru)
		}
	}
	return out
}

// meterLog keeps every MeterReport published on megawatch.v1.meter.> (the
// poller publishes to JetStream; core subscribers see the same messages).
type meterLog struct {
	mu    sync.Mutex
	fresh map[string]map[int64]float64 // meter → window end ns → power W
	stale map[string]map[int64]string  // meter → window end ns → error
}

func newMeterLog(t testing.TB, nc *nats.Conn) *meterLog {
	l := &meterLog{fresh: map[string]map[int64]float64{}, stale: map[string]map[int64]string{}}
	sub, err := nc.Subscribe(telemetry.MeterPrefix+".>", func(m *nats.Msg) {
		var r telemetry.MeterReport
		if proto.Unmarshal(m.Data, &r) != nil {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		switch {
		case !r.Stale && r.PowerW != nil:
			if l.fresh[r.Meter] == nil {
				l.fresh[r.Meter] = map[int64]float64{}
			}
			l.fresh[r.Meter][r.WindowEndUnixNs] = *r.PowerW
		case r.Stale && r.PowerW == nil:
			if l.stale[r.Meter] == nil {
				l.stale[r.Meter] = map[int64]string{}
			}
			l.stale[r.Meter][r.WindowEndUnixNs] = r.Error
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	unbounded(t, nc, sub)
	return l
}

// lastFresh is the newest window at or before end with a fresh report of
// meter (0: none).
func (l *meterLog) lastFresh(meter string, end int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best int64
	for w := range l.fresh[meter] {
		if w <= end && w > best {
			best = w
		}
	}
	return best
}

// firstStale is the oldest window after since with a stale report of meter
// and its error (0: none).
func (l *meterLog) firstStale(meter string, since time.Time) (int64, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var best int64
	var why string
	for w, e := range l.stale[meter] {
		if w > since.UnixNano() && (best == 0 || w < best) {
			best, why = w, e
		}
	}
	return best, why
}

// nodeLog keeps the newest NodeReport of each node seen on
// megawatch.v1.power.> (what the collectors and the publisher served).
type nodeLog struct {
	mu   sync.Mutex
	last map[string]*telemetry.NodeReport
}

func newNodeLog(t testing.TB, nc *nats.Conn) *nodeLog {
	l := &nodeLog{last: map[string]*telemetry.NodeReport{}}
	sub, err := nc.Subscribe(telemetry.PowerPrefix+".>", func(m *nats.Msg) {
		var r telemetry.NodeReport
		if proto.Unmarshal(m.Data, &r) != nil {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if o := l.last[r.Node]; o == nil || o.WindowEndUnixNs < r.WindowEndUnixNs {
			l.last[r.Node] = &r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	unbounded(t, nc, sub)
	return l
}

func (l *nodeLog) get(node string) *telemetry.NodeReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last[node]
}

// unbounded lifts sub's pending limits (an observer must never drop what it
// counts back) and flushes, so that the subscription is in place on the
// server before the caller goes on.
func unbounded(t testing.TB, nc *nats.Conn, sub *nats.Subscription) {
	t.Helper()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
