package meters

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// hangingServer accepts TCP connections and never answers (a wedged
// switchgear gateway).
func hangingServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// A meter that hangs costs its timeout and is stale (kind timeout); a
// refused one backs off exponentially while still being reported stale
// every window; neither holds up the other meters' windows.
func TestHungAndRefusedMeters(t *testing.T) {
	hung := hangingServer(t)
	doc := fmt.Sprintf(`
domains:
  - name: s
    capacity_kw: 10
    meters:
      - {name: hung, protocol: modbus, address: "%s", timeout: 150ms, modbus: {power: {address: 0, type: u16}}}
      - {name: refused, protocol: modbus, address: "127.0.0.1:1", modbus: {power: {address: 0, type: u16}}}
    children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: k, capacity_kw: 1, nodes: [n]}]}]}]
`, hung)
	topo, err := topology.Parse([]byte(doc), "faults.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	cfg := testConfig("p")
	cfg.Interval, cfg.Timeout, cfg.BackoffMax, cfg.Workers = 200*time.Millisecond, 150*time.Millisecond, 800*time.Millisecond, 1
	reg := prometheus.NewRegistry()
	p, err := New(cfg, topo, js, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	st, err := natsx.EnsureStream(context.Background(), js, natsx.DefaultStreamsConfig().MeterStream())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{topo: topo, js: js, stream: st}

	// Wait until the refused meter's reports span 24 windows.
	var first, last int64
	deadline := time.Now().Add(90 * time.Second)
	for {
		first, last = 0, 0
		for _, rep := range r.stored(t) {
			if rep.Meter != "refused" {
				continue
			}
			if !rep.Stale || rep.PowerW != nil || rep.Error == "" {
				t.Fatalf("refused meter report %v: want stale, no power, an error", rep)
			}
			if first == 0 {
				first = rep.WindowEndUnixNs
			}
			last = rep.WindowEndUnixNs
		}
		if first != 0 && (last-first)/int64(cfg.Interval) >= 24 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("refused meter reports span only %d windows", (last-first)/int64(cfg.Interval))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-done
	span := float64((last-first)/int64(cfg.Interval)) + 1
	polls := counter(t, reg, "megawatch_meters_polls_total", map[string]string{"meter": "refused"})
	if polls == 0 || polls*2 > span {
		t.Fatalf("refused meter read %v times over %v windows: want exponential backoff (at most half)", polls, span)
	}
	if n := counter(t, reg, "megawatch_meters_stale_reports_total", map[string]string{"meter": "refused", "reason": "backoff"}); n == 0 {
		t.Fatal("no backoff stale reports counted")
	}
	if n := counter(t, reg, "megawatch_meters_errors_total", map[string]string{"meter": "hung", "kind": "timeout"}); n == 0 {
		t.Fatalf("hung meter: no timeout errors counted")
	}
	var hungReports int
	for _, rep := range r.stored(t) {
		if rep.Meter == "hung" {
			hungReports++
			if !rep.Stale || rep.PowerW != nil {
				t.Fatalf("hung meter report %v: want stale without power", rep)
			}
		}
	}
	if hungReports == 0 {
		t.Fatal("hung meter never reported")
	}
}

// More slow meters than one worker can read in a window: the ones whose
// window passed are reported stale ("overload"), never read late.
func TestOverloadIsStale(t *testing.T) {
	doc := fmt.Sprintf(`
domains:
  - name: s
    capacity_kw: 10
    meters:
      - {name: m1, protocol: modbus, address: "%s", modbus: {power: {address: 0, type: u16}}}
      - {name: m2, protocol: modbus, address: "%s", modbus: {power: {address: 0, type: u16}}}
      - {name: m3, protocol: modbus, address: "%s", modbus: {power: {address: 0, type: u16}}}
    children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: k, capacity_kw: 1, nodes: [n]}]}]}]
`, hangingServer(t), hangingServer(t), hangingServer(t))
	topo, err := topology.Parse([]byte(doc), "overload.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	cfg := testConfig("p")
	cfg.Interval, cfg.Timeout, cfg.BackoffMax, cfg.Workers = 200*time.Millisecond, 150*time.Millisecond, 200*time.Millisecond, 1
	reg := prometheus.NewRegistry()
	p, err := New(cfg, topo, js, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for counter(t, reg, "megawatch_meters_stale_reports_total", map[string]string{"reason": "overload"}) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no overload stale report")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	st, err := js.Stream(context.Background(), "MEGAWATCH_METER")
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range (&rig{stream: st}).stored(t) {
		if !rep.Stale || rep.PowerW != nil {
			t.Fatalf("report %v: want stale without power", rep)
		}
	}
}

// HA with one poller cut off from the meter: its stale reports never mask
// the peer's fresh ones; the stream has both for a window, and one of each
// at most.
func TestStaleNeverMasksFresh(t *testing.T) {
	mbus := testenv.StartModbusServer(t)
	mbus.SetHolding(0, 777)
	doc := func(addr string) *topology.Topology {
		topo, err := topology.Parse([]byte(fmt.Sprintf(`
domains:
  - name: s
    capacity_kw: 10
    meters:
      - {name: m, protocol: modbus, address: "%s", modbus: {power: {address: 0, type: u16}}}
    children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: k, capacity_kw: 1, nodes: [n]}]}]}]
`, addr)), "ha.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return topo
	}
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	st, err := natsx.EnsureStream(context.Background(), js, natsx.DefaultStreamsConfig().MeterStream())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range []struct{ name, addr string }{{"cut-off", "127.0.0.1:1"}, {"ok", mbus.Addr}} {
		cfg := testConfig(c.name)
		cfg.Interval, cfg.Timeout, cfg.BackoffMax = 200*time.Millisecond, 150*time.Millisecond, 200*time.Millisecond
		p, err := New(cfg, doc(c.addr), js, slog.New(slog.DiscardHandler), nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()
	r := &rig{stream: st}
	deadline := time.Now().Add(60 * time.Second)
	for {
		fresh, stale, both := map[int64]int{}, map[int64]int{}, 0
		for _, rep := range r.stored(t) {
			if rep.Stale {
				stale[rep.WindowEndUnixNs]++
				if rep.Poller != "cut-off" {
					t.Fatalf("stale report from %s", rep.Poller)
				}
			} else {
				fresh[rep.WindowEndUnixNs]++
				if rep.GetPowerW() != 777 {
					t.Fatalf("fresh report %v", rep)
				}
			}
		}
		for w, n := range stale {
			if n > 1 || fresh[w] > 1 {
				t.Fatalf("window %d: %d stale and %d fresh reports stored", w, n, fresh[w])
			}
			if fresh[w] == 1 {
				both++
			}
		}
		if both >= 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d windows with both a stale and a fresh report (fresh %d, stale %d)", both, len(fresh), len(stale))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
