package alerts

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/notify/pagerduty"
	"github.com/megawatch/megawatch/alerts/notify/webhook"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"
)

// scenarioTopo: site dc1 (40 MW) with hall h1 (20 MW, 500 nodes) and h2
// (50 nodes). The simulated GPUs are scaled up (5 kW each, 40 kW per
// node) so that a few hundred nodes draw tens of MW, as a real hall does.
const scenarioTopo = `
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 40000
    children:
      - name: h1
        capacity_kw: 20000
        children:
          - name: r[1-5]
            capacity_kw: 4000
            children:
              - name: k[01-10]
                capacity_kw: 400
                nodes: ["g-{hall}-{row}-{rack}-n[01-10]"]
      - name: h2
        capacity_kw: 20000
        children:
          - name: r1
            capacity_kw: 4000
            children:
              - name: k[1-5]
                capacity_kw: 400
                nodes: ["g-{hall}-{row}-{rack}-n[01-10]"]
`

func f(v float64) *float64 { return &v }

// receiver records what an HTTP endpoint got (the webhook receiver of the
// real Alertmanager, PagerDuty's and our webhook's stand-ins).
type receiver struct {
	mu     sync.Mutex
	bodies [][]byte
	at     []time.Time
	hdr    []http.Header
	status int // answer; 0 = 200/202
	srv    *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		st := r.status
		if st == 0 {
			r.bodies = append(r.bodies, b)
			r.at = append(r.at, time.Now())
			r.hdr = append(r.hdr, req.Header.Clone())
			st = http.StatusAccepted
		}
		r.mu.Unlock()
		w.WriteHeader(st)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func (r *receiver) arrival(i int) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at[i]
}

func (r *receiver) body(i int) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[i]
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// world is an in-process NATS server, the topology, the simulated fleet
// and a fake clock of windows, driving an Engine window by window.
type world struct {
	t      *testing.T
	srv    *natstest.Server
	nc     *nats.Conn
	topo   *topology.Topology
	fleet  *sim.Fleet
	start  time.Time // fake clock: window w ends at start + w s
	silent func(i int) bool
	cfg    Config
	eng    *Engine
	stop   func()
	sent   uint64 // reports published to the current engine
	// tickedAt is the wall time each window's Tick was called (by window end, ns)
	tickedAt map[int64]time.Time
	logger   *slog.Logger
}

func newWorld(t *testing.T, jobs []sim.Job, rs []rules.Rule, simOpts ...func(*sim.Config)) *world {
	t.Helper()
	topo, err := topology.Parse([]byte(scenarioTopo), "scenario")
	if err != nil {
		t.Fatal(err)
	}
	// The fake clock runs in the past (so that Alertmanager, which uses
	// the wall clock, sees resolves as over), much faster than real time.
	start := time.Now().Add(-20 * time.Minute).Truncate(time.Second)
	sc := sim.DefaultConfig()
	sc.Epoch, sc.Seed, sc.TDPW, sc.IdleW, sc.ThermalRCPerW, sc.Noise = start, 1, 5000, 250, 0.005, 0.002
	sc.Jobs = jobs
	for _, o := range simOpts {
		o(&sc)
	}
	var locs []telemetry.Location
	for _, n := range topo.Nodes() {
		locs = append(locs, n.Location)
	}
	fl, err := sim.NewFleet(sc, locs)
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunServer(t)
	w := &world{t: t, srv: srv, nc: natstest.Connect(t, srv.URL()), topo: topo, fleet: fl, start: start,
		logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	w.cfg = DefaultConfig()
	w.cfg.NATS.Servers = []string{srv.URL()}
	w.cfg.HTTPAddr = ""
	w.cfg.Rules = rs
	// The scenario's GPUs draw 5 kW each (TDPW above), so that a small
	// topology reaches megawatt thresholds: beyond real GPUs' bounds.
	w.cfg.Plausible.GPUMaxW, w.cfg.Plausible.NodeMaxW = 6000, 100000
	w.cfg.Notifiers.Log.Enabled = false
	w.cfg.Notifiers.Dispatch.MinBackoff = 50 * time.Millisecond
	w.cfg.Notifiers.Dispatch.MaxBackoff = 200 * time.Millisecond
	return w
}

// startEngine starts (or restarts) the engine on the same KV bucket.
func (w *world) startEngine() {
	w.t.Helper()
	e, err := New(w.cfg, w.topo, w.nc, w.logger, nil)
	if err != nil {
		w.t.Fatal(err)
	}
	ctx := context.Background()
	if err := e.Start(ctx); err != nil {
		w.t.Fatal(err)
	}
	cancel, wait := e.background(ctx)
	in, err := e.subscribe(ctx, time.Now())
	if err != nil {
		w.t.Fatal(err)
	}
	w.eng, w.sent = e, 0
	w.stop = func() {
		in.stop()
		cancel()
		wait()
	}
	w.t.Cleanup(func() {
		if w.stop != nil {
			w.stop()
		}
	})
}

func (w *world) stopEngine() {
	w.stop()
	w.stop = nil
}

func (w *world) end(win int) time.Time { return w.start.Add(time.Duration(win) * time.Second) }

// window publishes every (non-silent) node's report for window win through
// NATS, waits until the engine has them all, and ticks it.
func (w *world) window(win int) []notify.Alert {
	w.t.Helper()
	end := w.end(win)
	var rep telemetry.NodeReport
	for i, n := range w.topo.Nodes() {
		if w.silent != nil && w.silent(i) {
			continue
		}
		w.fleet.Report(&rep, i, end, time.Second, 100*time.Millisecond)
		b, err := proto.Marshal(&rep)
		if err != nil {
			w.t.Fatal(err)
		}
		subj, _ := telemetry.PowerSubject(n.Location)
		if err := w.nc.Publish(subj, b); err != nil {
			w.t.Fatal(err)
		}
		w.sent++
	}
	waitFor(w.t, 10*time.Second, "reports to reach the aggregator", func() bool { return w.eng.agg.Stats().Accepted >= w.sent })
	if w.tickedAt == nil {
		w.tickedAt = map[int64]time.Time{}
	}
	w.tickedAt[end.UnixNano()] = time.Now()
	return w.eng.Tick(context.Background(), end)
}

// pdEvents decodes what the PagerDuty stand-in received.
func pdEvents(t *testing.T, r *receiver) []pagerduty.Event {
	t.Helper()
	var out []pagerduty.Event
	for i := range r.count() {
		var ev pagerduty.Event
		if err := json.Unmarshal(r.body(i), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// hookAlerts decodes what our webhook notifier delivered.
func hookAlerts(t *testing.T, r *receiver) []webhook.Payload {
	t.Helper()
	var out []webhook.Payload
	for i := range r.count() {
		var p webhook.Payload
		if err := json.Unmarshal(r.body(i), &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}
