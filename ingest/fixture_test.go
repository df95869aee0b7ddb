package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// Hand-built reports with deterministic values (seq and gpu index are in
// the values), so tests can predict every field InfluxDB must hold.

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }
func i32(v int32) *int32   { return &v }

// fleetLocs is a campus of n nodes: 18 per rack, 72 per row, 500 per hall.
func fleetLocs(n int) []telemetry.Location {
	locs := make([]telemetry.Location, n)
	for i := range locs {
		locs[i] = telemetry.Location{Site: "dc1", Hall: fmt.Sprintf("h%d", i/500), Row: fmt.Sprintf("r%02d", i/72), Rack: fmt.Sprintf("k%03d", i/18), Node: fmt.Sprintf("n%05d", i)}
	}
	return locs
}

// newFleet is the simulator's fleet model (realistic reports) for locs.
func newFleet(tb testing.TB, locs []telemetry.Location) *sim.Fleet {
	tb.Helper()
	fleet, err := sim.NewFleet(sim.DefaultConfig(), locs)
	if err != nil {
		tb.Fatal(err)
	}
	return fleet
}

// natsProcess starts a nats-server process (tests that kill or restart it)
// with megawatch's streams.
func natsProcess(t *testing.T) (*testenv.NATSServer, jetstream.JetStream) {
	t.Helper()
	ns := testenv.StartNATSServer(t)
	js, err := jetstream.New(connect(t, ns.URL))
	if err != nil {
		t.Fatal(err)
	}
	ensureStreams(t, js)
	return ns, js
}

// natsInProcess starts an in-process NATS server with megawatch's streams
// and returns its URL.
func natsInProcess(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	srv := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, srv.URL()))
	ensureStreams(t, js)
	return srv.URL(), js
}

func testLoc(i int) telemetry.Location {
	return telemetry.Location{Site: "dc1", Hall: fmt.Sprintf("h%d", 1+i%2), Row: "r01", Rack: fmt.Sprintf("k%02d", i%4), Node: fmt.Sprintf("n%04d", i)}
}

// testReport is node i's report number seq (window end end). GPU 7 has no
// memory temperature (absent field); everything else is present.
func testReport(loc telemetry.Location, seq uint64, end time.Time, gpus int) *telemetry.NodeReport {
	r := &telemetry.NodeReport{Site: loc.Site, Hall: loc.Hall, Row: loc.Row, Rack: loc.Rack, Node: loc.Node,
		WindowEndUnixNs: end.UnixNano(), WindowMs: 1000, SlotMs: 100, Seq: seq}
	var slotSum uint32
	for g := range gpus {
		p := uint32(500_000 + 1000*g + int(seq%1000))
		gpu := &telemetry.Gpu{Index: uint32(g), PowerMw: u32(p), PowerMinMw: u32(p - 100_000), PowerMaxMw: u32(p + 100_000),
			EnergyMj: u64(seq*1000 + uint64(g)), TempC: i32(60 + int32(g)), PowerLimitMw: u32(700_000),
			SmClockMhz: u32(1980), UtilPct: u32(90), ThrottleReasons: u64(4)}
		if g != 7 {
			gpu.MemTempC = i32(70)
		}
		slotSum += p / 1000
		r.Gpus = append(r.Gpus, gpu)
	}
	for s := range 10 {
		r.SlotPowerW = append(r.SlotPowerW, slotSum+uint32(s))
	}
	return r
}

func publishReport(t testing.TB, js jetstream.JetStream, r *telemetry.NodeReport) {
	t.Helper()
	subj, err := telemetry.PowerSubject(telemetry.ReportLocation(r))
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, subj, r, telemetry.MsgID(r.Node, r.WindowEndUnixNs))
}

func publishRaw(t testing.TB, js jetstream.JetStream, subj string, m proto.Message, id string) {
	t.Helper()
	data, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	publishBytes(t, js, subj, data, id)
}

func publishBytes(t testing.TB, js jetstream.JetStream, subj string, data []byte, id string) {
	t.Helper()
	msg := nats.NewMsg(subj)
	msg.Data = data
	if id != "" {
		msg.Header.Set(telemetry.HeaderMsgID, id)
	}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.PublishMsg(ctx, msg)
		cancel()
		if err == nil {
			return
		}
		if attempt > 100 {
			t.Fatalf("publish %s: %v", subj, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ensureStreams(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
}

// testConfig writes to influx at url, database db.
func testConfig(url, db string) Config {
	c := DefaultConfig()
	c.Targets = []Target{{Name: "t", URL: url, Bucket: db + "/autogen"}}
	c.MetricsAddr = ""
	c.BatchWait = 200 * time.Millisecond
	c.RetryMin = 50 * time.Millisecond
	c.RetryMax = 500 * time.Millisecond
	c.AckWait = 5 * time.Second
	c.Workers = 2
	c.WriteTimeout = 5 * time.Second
	return c
}

// logBuf collects logs (a test greps them for the token).
type logBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

func testLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startIngest runs an Ingester on its own connection until the returned
// stop is called (which waits for Run to return).
func startIngest(t testing.TB, cfg Config, url string, logs io.Writer) (in *Ingester, stop func(), nc *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	in, err = New(cfg, nc, testLogger(logs), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Errorf("ingest run: %v", err)
			}
			nc.Close()
		})
	}
	t.Cleanup(stop)
	return in, stop, nc
}

// waitFor polls cond until it is true or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func protoMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

func itoa(n int64) string { return fmt.Sprint(n) }

func publishRollup(t testing.TB, js jetstream.JetStream, path []string, end time.Time) {
	t.Helper()
	level := []string{"site", "hall", "row", "rack"}[len(path)-1]
	ro := &telemetry.Rollup{Level: level, Path: path, WindowEndUnixNs: end.UnixNano(), PowerW: 1e6, PowerEstW: 1e6, PowerMaxW: 1.2e6, CapacityW: 2e6, NodesReporting: 1, NodesExpected: 1}
	subj, err := telemetry.RollupSubject(level, path)
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, subj, ro, "")
}
