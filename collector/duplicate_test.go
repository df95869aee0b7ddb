package collector

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/internal/natsauth"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

func TestSplitNonce(t *testing.T) {
	f := func(id, wantBase string, wantNonce bool) {
		t.Helper()
		base, ok := splitNonce(id)
		if base != wantBase || ok != wantNonce {
			t.Errorf("splitNonce(%q) = %q, %v; want %q, %v", id, base, ok, wantBase, wantNonce)
		}
	}
	f("n1:1700000000000", "n1:1700000000000", false)
	f("n1:1700000000000:0123456789abcdef", "n1:1700000000000", true)
	f("n1:1700000000000:0123456789ABCDEF", "n1:1700000000000:0123456789ABCDEF", false) // upper-case is not ours
	f("n1:1700000000000:0123456789abcde", "n1:1700000000000:0123456789abcde", false)
	f("0123456789abcdef:1", "0123456789abcdef:1", false)
	f(":0123456789abcdef", ":0123456789abcdef", false)
	if n := newNonce(); len(n) != nonceLen || strings.Trim(n, "0123456789abcdef") != "" || n == newNonce() {
		t.Errorf("nonce %q", n)
	}
}

// stored is one message of the power stream.
type stored struct {
	subject, id string
	rep         *telemetry.NodeReport
}

// readPowerStream reads every message of MEGAWATCH_POWER through a pull
// consumer (what the ingest user may do).
func readPowerStream(t *testing.T, js jetstream.JetStream, name string) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, telemetry.StreamPower, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for uint64(len(out)) < info.NumPending {
		batch, err := cons.Fetch(int(info.NumPending)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			s := stored{subject: m.Subject(), id: m.Headers().Get(jetstream.MsgIDHeader)}
			var r telemetry.NodeReport
			if proto.Unmarshal(m.Data(), &r) == nil {
				s.rep = &r
			}
			out = append(out, s)
		}
		if n == 0 {
			t.Fatalf("fetched %d of %d messages", len(out), info.NumPending)
		}
	}
	return out
}

// A report replayed from the disk buffer was maybe published by the
// previous process: its duplicate ack is the retry de-duplication, not an
// attack. It is delivered once, counted as kind=retry, not re-published.
func TestDuplicateAckOfARetryIsDelivered(t *testing.T) {
	testenv.Short(t)
	srv := setupStream(t)
	dir := t.TempDir()
	d, _, err := openDiskLog(dir, segEntries, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	subject, _ := telemetry.PowerSubject(testLoc)
	prev := entry{subject: subject, msgID: telemetry.MsgID(testLoc.Node, time.Now().Add(-time.Minute).UnixNano()), data: []byte{}}
	if err := d.append(prev); err != nil {
		t.Fatal(err)
	}
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	// The previous process's publish reached the stream; it died before the ack.
	nc := natstest.Connect(t, srv.URL())
	js := natstest.JetStream(t, nc)
	if _, err := js.Publish(context.Background(), subject, prev.data, jetstream.WithMsgID(prev.msgID)); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.BufferDir = dir
	run := startCollector(t, cfg, newMockNode(time.Now), collectorConn(t, srv.URL()))
	waitFor(t, "the replayed report's ack", 20*time.Second, func() bool {
		return counterValue(t, run.c.m.dupAcks.WithLabelValues("retry")) >= 1 && counterValue(t, run.c.m.published) >= 3
	})
	run.stop(t)
	if n := counterValue(t, run.c.m.dupAcks.WithLabelValues("unexplained")); n != 0 {
		t.Errorf("unexplained duplicates: %v", n)
	}
	if n := counterValue(t, run.c.m.republished); n != 0 {
		t.Errorf("republished %v", n)
	}
	copies := 0
	for _, s := range readPowerStream(t, js, "check") {
		if base, _ := splitNonce(s.id); base == prev.msgID {
			copies++
		}
	}
	if copies != 1 {
		t.Errorf("the replayed report is %d times in the stream, want once", copies)
	}
}

// TestForgedMsgIDCannotCensorANode is the attack end to end, on the real
// nats-server with the creds `megawatch nats-accounts` issues: node A
// publishes, on its own subject (all it may do), node B's next Msg-Ids.
// B's collector gets Duplicate: true for reports it never published,
// counts and re-publishes them: every one of B's reports is in the
// stream, and A's forgeries stand out (B's id on A's subject).
func TestForgedMsgIDCannotCensorANode(t *testing.T) {
	testenv.Short(t)
	b := testLoc
	a := telemetry.Location{Site: b.Site, Hall: b.Hall, Row: b.Row, Rack: "rk02", Node: "gpu-h1-r01-rk02-n01"}
	topo, err := topology.Parse([]byte(fmt.Sprintf(`
domains:
  - name: %s
    capacity_kw: 1000
    children:
      - name: %s
        capacity_kw: 500
        children:
          - name: %s
            capacity_kw: 100
            children:
              - {name: %s, capacity_kw: 30, nodes: [%s]}
              - {name: %s, capacity_kw: 30, nodes: [%s]}
`, b.Site, b.Hall, b.Row, b.Rack, b.Node, a.Rack, a.Node)), "attack-topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := testenv.FreePort(t)
	if _, err := natsauth.Generate(natsauth.Options{Dir: dir, Topology: topo, Server: natsauth.ServerOptions{
		Listen: fmt.Sprintf("127.0.0.1:%d", port), HTTP: fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		StoreDir: filepath.Join(dir, "js"), MaxMemory: "256MB", MaxFile: "1GB"}}); err != nil {
		t.Fatal(err)
	}
	srv := testenv.StartNATSConfig(t, filepath.Join(dir, natsauth.ConfFile), port)
	connect := func(creds string) *nats.Conn {
		t.Helper()
		cfg := natsx.Config{Servers: []string{srv.URL}, CredsFile: creds, ReconnectWaitMax: 300 * time.Millisecond,
			TLSCAFile: filepath.Join(dir, natsauth.TLSSubdir, natsauth.CAFile)}
		nc, err := natsx.Connect(cfg, testLogger(t), nats.RetryOnFailedConnect(false))
		if err != nil {
			t.Fatalf("connect %s: %v\n%s", creds, err, srv.Output())
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx := context.Background()
	ingestJS, err := jetstream.New(connect(natsauth.ServiceCredsPath(dir, natsauth.RoleIngest)))
	if err != nil {
		t.Fatal(err)
	}
	if err := natsx.EnsureStreams(ctx, ingestJS, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}

	// A forges B's Msg-Ids for the windows of the next few seconds.
	cfg := fastConfig()
	cfg.AckTimeout = 5 * time.Second // the default: no retries on a loaded machine
	jsA, err := jetstream.New(connect(natsauth.NodeCredsPath(dir, a.Node)))
	if err != nil {
		t.Fatal(err)
	}
	subjA, _ := telemetry.PowerSubject(a)
	subjB, _ := telemetry.PowerSubject(b)
	forged := map[string]bool{}
	first := time.Now().Truncate(cfg.Window).Add(2 * cfg.Window)
	for end := first; end.Before(first.Add(4 * time.Second)); end = end.Add(cfg.Window) {
		id := telemetry.MsgID(b.Node, end.UnixNano())
		ack, err := jsA.Publish(ctx, subjA, []byte("forged"), jetstream.WithMsgID(id))
		if err != nil || ack.Duplicate {
			t.Fatalf("forging %s: %v %+v", id, err, ack)
		}
		forged[id] = true
	}
	lastForged := first.Add(4 * time.Second)

	// B's real collector, with B's creds.
	reg := prometheus.NewRegistry()
	c, err := New(cfg, newMockNode(time.Now), b, connect(natsauth.NodeCredsPath(dir, b.Node)), testLogger(t), reg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	waitFor(t, "B's reports past the forged windows", 60*time.Second, func() bool {
		return counterValue(t, c.m.published) > 0 && time.Now().After(lastForged.Add(time.Second)) && counterValue(t, c.m.buffered) == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	msgs := readPowerStream(t, ingestJS, "verify")
	var bSeqs []uint64
	republished, forgedSeen := 0, 0
	for _, m := range msgs {
		base, nonced := splitNonce(m.id)
		switch m.subject {
		case subjA: // A's forgeries: B's id on A's subject
			if !forged[m.id] {
				t.Errorf("unexpected message on A's subject: %q", m.id)
			}
			forgedSeen++
		case subjB:
			if m.rep == nil || m.rep.Node != b.Node {
				t.Fatalf("B's subject holds a message that is not B's report (id %q)", m.id)
			}
			if want := telemetry.MsgID(b.Node, m.rep.WindowEndUnixNs); base != want {
				t.Errorf("B's report id %q, want %q or %q:<nonce>", m.id, want, want)
			}
			if nonced {
				republished++
				if !forged[base] {
					t.Errorf("B re-published %q, which A did not forge", m.id)
				}
				if !m.rep.Replayed {
					t.Errorf("re-published report %q not flagged replayed", m.id)
				}
			} else if forged[m.id] {
				t.Errorf("B's report %q stored under a forged id", m.id)
			}
			bSeqs = append(bSeqs, m.rep.Seq)
		default:
			t.Errorf("message on %s", m.subject)
		}
	}
	if forgedSeen != len(forged) {
		t.Errorf("%d of A's %d forgeries in the stream", forgedSeen, len(forged))
	}
	// Every report of B is stored: seq 1..n, each once (re-published ones
	// are stored at the end, after the reports queued behind them).
	seen := map[uint64]int{}
	var maxSeq uint64
	for _, s := range bSeqs {
		seen[s]++
		maxSeq = max(maxSeq, s)
	}
	for s := uint64(1); s <= maxSeq; s++ {
		if seen[s] != 1 {
			t.Errorf("B's report seq %d is %d times in the stream, want once", s, seen[s])
		}
	}
	unexplained := counterValue(t, c.m.dupAcks.WithLabelValues("unexplained"))
	if republished < 3 || float64(republished) != unexplained || counterValue(t, c.m.republished) != unexplained {
		t.Errorf("B re-published %d reports; counted %v unexplained duplicates and %v re-publishes",
			republished, unexplained, counterValue(t, c.m.republished))
	}
	// The metric is exported under its documented name.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "megawatch_collector_duplicate_acks_total"
	}
	if !found {
		t.Error("megawatch_collector_duplicate_acks_total is not registered")
	}
}
