package ingest

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// stream publishes `windows` windows of `nodes` nodes (seq 1..windows,
// window end base+seq seconds), pacing each window by every; pause, if not
// nil, is called before each window (fault injection).
type stream struct {
	nodes, windows int
	base           time.Time
}

func newStream(nodes, windows int) stream {
	return stream{nodes: nodes, windows: windows, base: time.Now().Truncate(time.Second).Add(-30 * time.Minute)}
}

func (s stream) publish(t testing.TB, js jetstream.JetStream, every time.Duration, before func(seq int)) {
	for seq := 1; seq <= s.windows; seq++ {
		if before != nil {
			before(seq)
		}
		for i := range s.nodes {
			publishReport(t, js, testReport(testLoc(i), uint64(seq), s.base.Add(time.Duration(seq)*time.Second), 8))
		}
		time.Sleep(every)
	}
}

// exact waits until InfluxDB holds every point once, then names any seq
// missing per node if it does not.
func (s stream) exact(t testing.TB, influx *testenv.Influxd, db string, timeout time.Duration) {
	t.Helper()
	want := int64(s.nodes * s.windows)
	deadline := time.Now().Add(timeout)
	for {
		n := influx.Count(t, db, `SELECT count(gpus) FROM node`)
		g := influx.Count(t, db, `SELECT count(power_w) FROM gpu`)
		if n == want && g == want*8 {
			return
		}
		if n > want || time.Now().After(deadline) {
			t.Fatalf("node points %d, gpu points %d, want %d and %d; missing: %s", n, g, want, want*8, s.missing(t, influx, db))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s stream) missing(t testing.TB, influx *testenv.Influxd, db string) string {
	have := map[string]map[int]bool{}
	for _, se := range influx.Query(t, db, `SELECT gpus FROM node GROUP BY node`) {
		m := map[int]bool{}
		for _, v := range se.Values {
			ns, _ := v[0].(interface{ Int64() (int64, error) }).Int64()
			m[int((ns-s.base.UnixNano())/1e9)] = true
		}
		have[se.Tags["node"]] = m
	}
	var out []string
	for i := range s.nodes {
		node := testLoc(i).Node
		var miss []int
		for seq := 1; seq <= s.windows; seq++ {
			if !have[node][seq] {
				miss = append(miss, seq)
			}
		}
		if len(miss) > 0 {
			out = append(out, fmt.Sprintf("%s seq %v", node, miss))
		}
	}
	sort.Strings(out)
	return fmt.Sprint(out)
}

// TestFaultInfluxKilled: influxd SIGKILLed mid-stream and restarted after
// 20 s; nothing lost or doubled, and heap stays bounded during the outage.
func TestFaultInfluxKilled(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	ns, js := natsProcess(t)
	cfg := testConfig(influx.URL, "mw")
	cfg.MaxInflightBytes = 1 << 20
	in, _, _ := startIngest(t, cfg, ns.URL, nil)
	// 200 nodes: the ~2 MB published during the outage exceed the 1 MiB
	// in-flight limit, so the backlog must stay in the stream.
	s := newStream(200, 60)
	var maxHeap, maxInflight, maxPending atomic.Uint64
	var killedAt time.Time
	s.publish(t, js, 50*time.Millisecond, func(seq int) {
		if seq == 20 {
			influx.Kill()
			killedAt = time.Now()
			go func() {
				for i := 0; i < 20; i++ {
					var ms runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&ms)
					maxHeap.Store(max(maxHeap.Load(), ms.HeapAlloc))
					maxInflight.Store(max(maxInflight.Load(), uint64(in.inflight.Load())))
					maxPending.Store(max(maxPending.Load(), uint64(testutil.ToFloat64(in.m.pending.WithLabelValues(cfg.Consumer)))))
					time.Sleep(time.Second)
				}
			}()
		}
		if seq == 40 {
			waitFor(t, 60*time.Second, "readyz to report the failed write", func() bool { return in.Ready() != nil })
			time.Sleep(time.Until(killedAt.Add(20 * time.Second)))
			influx.Restart(t)
		}
	})
	s.exact(t, influx, "mw", 60*time.Second)
	if in.Ready() != nil {
		t.Errorf("not ready after recovery: %v", in.Ready())
	}
	if h := maxHeap.Load(); h > 64<<20 {
		t.Errorf("heap reached %d MiB while influxd was down, ceiling 64 MiB", h>>20)
	}
	if f := maxInflight.Load(); f > uint64(cfg.MaxInflightBytes) {
		t.Errorf("in-flight bytes reached %d, limit %d", f, cfg.MaxInflightBytes)
	}
	if p := maxPending.Load(); p < 500 {
		t.Errorf("consumer pending peaked at %d during the outage: the backlog did not stay in the stream", p)
	}
}

// TestFaultIngestKilled: an ingest process is SIGKILLed mid-batch (a slow
// InfluxDB keeps batches in flight); a new one writes everything exactly once.
func TestFaultIngestKilled(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	ns, js := natsProcess(t)
	s := newStream(40, 40)
	s.publish(t, js, 0, nil)
	slow := httptest.NewServer(delayProxy(influx.URL, 300*time.Millisecond, nil))
	defer slow.Close()
	child := exec.Command(os.Args[0], "-test.run=^TestIngestChildProcess$")
	child.Env = append(os.Environ(), "MW_INGEST_CHILD_NATS="+ns.URL, "MW_INGEST_CHILD_INFLUX="+slow.URL)
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "some points", func() bool { return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) > 0 })
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if n := influx.Count(t, "mw", `SELECT count(gpus) FROM node`); n >= int64(s.nodes*s.windows) {
		t.Fatalf("all %d points written before the kill; the test needs a bigger stream\n%s", n, out.String())
	}
	startIngest(t, testConfig(influx.URL, "mw"), ns.URL, nil)
	s.exact(t, influx, "mw", 60*time.Second)
}

// TestIngestChildProcess is the ingest process TestFaultIngestKilled kills.
func TestIngestChildProcess(t *testing.T) {
	natsURL := os.Getenv("MW_INGEST_CHILD_NATS")
	if natsURL == "" {
		t.Skip("helper process of TestFaultIngestKilled")
	}
	cfg := testConfig(os.Getenv("MW_INGEST_CHILD_INFLUX"), "mw")
	cfg.BatchLines = 500
	startIngest(t, cfg, natsURL, os.Stderr)
	select {} // until SIGKILL
}

// TestFaultNATSKilled: nats-server killed mid-stream and restarted on its
// store, under two ingest processes sharing the consumer.
func TestFaultNATSKilled(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	ns, js := natsProcess(t)
	// Two ingest processes share the durable consumer.
	startIngest(t, testConfig(influx.URL, "mw"), ns.URL, nil)
	startIngest(t, testConfig(influx.URL, "mw"), ns.URL, nil)
	s := newStream(40, 30)
	s.publish(t, js, 30*time.Millisecond, func(seq int) {
		if seq == 15 {
			ns.Kill()
			time.Sleep(2 * time.Second)
			ns.Restart(t)
		}
	})
	s.exact(t, influx, "mw", 60*time.Second)
}

// TestRetryAfter: InfluxDB answers 503 with Retry-After for a while; the
// batches wait and then land, exactly once.
func TestRetryAfter(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	ns, js := natsProcess(t)
	var unavailable atomic.Bool
	var refused atomic.Int64
	unavailable.Store(true)
	proxy := httptest.NewServer(delayProxy(influx.URL, 0, func(w http.ResponseWriter) bool {
		if unavailable.Load() {
			refused.Add(1)
			w.Header().Set("Retry-After", "1")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	}))
	defer proxy.Close()
	in, _, _ := startIngest(t, testConfig(proxy.URL, "mw"), ns.URL, nil)
	s := newStream(20, 20)
	s.publish(t, js, 0, nil)
	time.Sleep(3 * time.Second)
	if in.Ready() == nil {
		t.Error("ready while every write gets 503")
	}
	unavailable.Store(false)
	s.exact(t, influx, "mw", 30*time.Second)
	// Retry-After: 1 over ~3 s: a handful of tries per worker, not a storm.
	if n := refused.Load(); n < 2 || n > 20 {
		t.Errorf("%d refused writes in 3 s with Retry-After: 1", n)
	}
}

// delayProxy forwards to target after delay; intercept may answer instead.
func delayProxy(target string, delay time.Duration, intercept func(http.ResponseWriter) bool) http.Handler {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept != nil && intercept(w) {
			return
		}
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(w, r)
	})
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
