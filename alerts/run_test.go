package alerts

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/obs"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// Run on the wall clock: it subscribes, ticks every window, publishes
// rollups and serves the live page, /api/snapshot, /metrics and /readyz on
// one address; it stops cleanly when its context ends.
func TestRunServesAndTicks(t *testing.T) {
	testenv.Short(t)
	w := newWorld(t, nil, DefaultRules())
	w.cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	e, err := New(w.cfg, w.topo, w.nc, w.logger, obs.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rollups := make(chan []byte, 100)
	sub, err := w.nc.Subscribe(telemetry.RollupPrefix+".site.dc1", func(m *nats.Msg) { rollups <- m.Data })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	base := "http://" + w.cfg.HTTPAddr
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor(t, 10*time.Second, "/readyz", func() bool { c, _ := get("/readyz"); return c == http.StatusOK })
	select {
	case b := <-rollups:
		var r telemetry.Rollup
		if err := proto.Unmarshal(b, &r); err != nil || r.GetNodesExpected() != 550 || r.GetWindowEndUnixNs()%int64(time.Second) != 0 {
			t.Fatalf("rollup %v %v", &r, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no site rollup from Run")
	}
	waitFor(t, 5*time.Second, "a snapshot", func() bool {
		_, body := get("/api/snapshot")
		var s struct {
			Sites []struct{ Key string } `json:"sites"`
		}
		return json.Unmarshal([]byte(body), &s) == nil && len(s.Sites) == 1 && s.Sites[0].Key == "dc1"
	})
	if c, body := get("/metrics"); c != http.StatusOK || !strings.Contains(body, "megawatch_alerts_ticks_total") {
		t.Fatalf("/metrics %d", c)
	}
	if c, body := get("/"); c != http.StatusOK || !strings.Contains(strings.ToLower(body), "<html") {
		t.Fatalf("live page %d", c)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

// With a grace longer than the window (thousands of nodes reporting from a
// busy machine), Run still ticks every window once, in order: no window is
// skipped, none repeated. A skipped window would alias a 2 s oscillation
// into a constant and zero the ramp.
func TestRunTicksEveryWindowWhenGraceExceedsWindow(t *testing.T) {
	testenv.Short(t)
	w := newWorld(t, nil, DefaultRules())
	w.cfg.Window = 200 * time.Millisecond
	w.cfg.Slot = 20 * time.Millisecond
	w.cfg.Grace = 450 * time.Millisecond
	w.cfg.HTTPAddr = ""
	e, err := New(w.cfg, w.topo, w.nc, w.logger, obs.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ends := make(chan int64, 100)
	sub, err := w.nc.Subscribe(telemetry.RollupPrefix+".site.dc1", func(m *nats.Msg) {
		var r telemetry.Rollup
		if proto.Unmarshal(m.Data, &r) == nil {
			ends <- r.GetWindowEndUnixNs()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var got []int64
	deadline := time.After(20 * time.Second)
	for len(got) < 8 {
		select {
		case end := <-ends:
			got = append(got, end)
		case <-deadline:
			t.Fatalf("only %d rollups: %v", len(got), got)
		}
	}
	cancel()
	<-done
	for i := 1; i < len(got); i++ {
		if d := time.Duration(got[i] - got[i-1]); d != w.cfg.Window {
			t.Fatalf("window ends %v: step %d is %v, want every %v window once", got, i, d, w.cfg.Window)
		}
	}
}
