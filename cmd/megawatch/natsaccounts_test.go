package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/natsauth"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// asyncErrs records a connection's async errors (permission violations).
type asyncErrs struct {
	mu   sync.Mutex
	errs []string
}

func (a *asyncErrs) handler() nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		a.mu.Lock()
		a.errs = append(a.errs, err.Error())
		a.mu.Unlock()
	})
}

func (a *asyncErrs) all() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.errs...)
}

// first is at most the first 10 errors, for failure messages.
func (a *asyncErrs) first() []string {
	e := a.all()
	return e[:min(len(e), 10)]
}

// waitAll waits until every want string is among the errors.
func (a *asyncErrs) waitAll(t *testing.T, who string, want []string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		joined := strings.Join(a.all(), "\n")
		var missing []string
		for _, w := range want {
			if !strings.Contains(joined, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never saw %q; errors seen:\n%s", who, missing, joined)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// natsDeployment is the output of `megawatch nats-accounts` with
// nats-server running on it as is.
type natsDeployment struct {
	dir  string
	args []string // the command line that wrote it
	srv  *testenv.NATSServer
}

// newNATSDeployment runs the command exactly as docs/nats.md shows (with
// free ports and a temporary store) and starts `nats-server -c` on its
// nats-server.conf.
func newNATSDeployment(t *testing.T, extra ...string) *natsDeployment {
	t.Helper()
	testenv.Short(t)
	dir := t.TempDir()
	port := testenv.FreePort(t)
	var stdout, stderr bytes.Buffer
	args := []string{"nats-accounts", "--out", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--http", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--store-dir", filepath.Join(dir, "js"),
		"--max-memory", "256MB", "--max-file", "1GB"}
	args = append(args, extra...)
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("megawatch %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return &natsDeployment{dir: dir, args: args, srv: testenv.StartNATSConfig(t, filepath.Join(dir, natsauth.ConfFile), port)}
}

func (d *natsDeployment) nodeCreds(node string) string { return natsauth.NodeCredsPath(d.dir, node) }
func (d *natsDeployment) serviceCreds(role string) string {
	return natsauth.ServiceCredsPath(d.dir, role)
}

// config is the nats: block a component would use with these creds.
func (d *natsDeployment) config(creds string) natsx.Config {
	cfg := natsx.DefaultConfig()
	cfg.Servers = []string{d.srv.URL}
	cfg.CredsFile = creds
	cfg.TLSCAFile = filepath.Join(d.dir, natsauth.TLSSubdir, natsauth.CAFile)
	cfg.Name = filepath.Base(creds)
	return cfg
}

// connect connects like the components do and fails unless the
// connection is up and encrypted.
func (d *natsDeployment) connect(t *testing.T, creds string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	cfg := d.config(creds)
	if err := cfg.Validate("nats"); err != nil {
		t.Fatal(err)
	}
	nc, err := natsx.Connect(cfg, nil, append(extra, nats.RetryOnFailedConnect(false))...)
	if err != nil {
		t.Fatalf("connect with %s: %v\n%s", creds, err, d.srv.Output())
	}
	t.Cleanup(nc.Close)
	if !nc.TLSRequired() {
		t.Fatalf("%s: connection is not TLS", creds)
	}
	return nc
}

// The shipped configs/nats/nats-server.conf is the command's output for
// an install in /etc/nats, and nats-server accepts the command's output.
func TestNATSAccountsShippedConfig(t *testing.T) {
	testenv.Short(t)
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"nats-accounts", "--out", dir, "--install-dir", "/etc/nats"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	got, _ := os.ReadFile(filepath.Join(dir, natsauth.ConfFile))
	want, err := os.ReadFile("../../configs/nats/nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("configs/nats/nats-server.conf is not what `megawatch nats-accounts --install-dir /etc/nats` writes")
	}
	// Written for its own directory, the config is valid as is.
	dir2 := t.TempDir()
	if code := run(context.Background(), []string{"nats-accounts", "--out", dir2, "--store-dir", filepath.Join(dir2, "js")}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out, err := exec.Command(testenv.Binary(t, "nats-server"), "-t", "-c", filepath.Join(dir2, natsauth.ConfFile)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "is valid") {
		t.Fatalf("nats-server -t: %v\n%s", err, out)
	}
}

// TestNATSAccountsIsolation runs nats-server on exactly what `megawatch
// nats-accounts` wrote, and checks each generated credential: a node
// publishes only its own subject and receives nothing of anyone else
// (other nodes, other inboxes, rollups, alert events, JetStream API
// replies); the real collector, ingest and alerts do their whole job with
// their creds without a single permissions violation; tap reads and
// cannot publish.
func TestNATSAccountsIsolation(t *testing.T) {
	d := newNATSDeployment(t)
	topo, err := configs.LoadTopology("")
	if err != nil {
		t.Fatal(err)
	}
	nodes := topo.Nodes()
	a, b, c := nodes[0].Location, nodes[5].Location, nodes[9].Location // different racks
	subjA, _ := telemetry.PowerSubject(a)
	subjB, _ := telemetry.PowerSubject(b)
	subjC, _ := telemetry.PowerSubject(c)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	logger := slog.New(slog.DiscardHandler)
	var svcErrs asyncErrs

	// alerts: aggregates, fires a rule, keeps its state in KV.
	acfg := alerts.DefaultConfig()
	acfg.HTTPAddr = ""
	low := 0.0001
	acfg.Rules = []rules.Rule{{Name: "hall_power_test", Level: "hall", Metric: "power_mw", Threshold: &low, Severity: "warning"}}
	eng, err := alerts.New(acfg, topo, d.connect(t, d.serviceCreds(natsauth.RoleAlerts), svcErrs.handler()), logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = eng.Run(ctx) })

	// ingest: creates the streams, consumes, writes line protocol to a file.
	lp := filepath.Join(t.TempDir(), "out.lp")
	icfg := ingest.DefaultConfig()
	icfg.BatchWait = 100 * time.Millisecond
	icfg.MetricsAddr = ""
	icfg.Targets = []ingest.Target{{Name: "file", File: lp}}
	in, err := ingest.New(icfg, d.connect(t, d.serviceCreds(natsauth.RoleIngest), svcErrs.handler()), logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = in.Run(ctx) })

	// node B: the real collector on a simulated GPU node.
	dev, err := sim.New(sim.DefaultConfig(), b, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := collector.DefaultConfig()
	col, err := collector.New(ccfg, dev, b, d.connect(t, d.nodeCreds(b.Node), svcErrs.handler()), logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = col.Run(ctx) })

	// tap reads everything live and may publish nothing.
	var tapErrs asyncErrs
	tapNC := d.connect(t, d.serviceCreds(natsauth.RoleTap), tapErrs.handler())
	var tapGot atomic.Int64
	if _, err := tapNC.Subscribe(telemetry.Prefix+".>", func(*nats.Msg) { tapGot.Add(1) }); err != nil {
		t.Fatal(err)
	}
	_ = tapNC.Publish(subjB, []byte("tap forging"))
	_ = tapNC.Publish(telemetry.RollupPrefix+".hall.dc1.h1", []byte("tap forging"))

	// Node A: the snoop and forger.
	var aErrs asyncErrs
	ncA := d.connect(t, d.nodeCreds(a.Node), aErrs.handler())
	var aGot atomic.Int64
	var aSubjects sync.Map
	denied := []string{"_INBOX.>", "_INBOX.*.>", natsx.UserInboxWildcard("ingest"), natsx.UserInboxWildcard("alerts"),
		natsx.UserInboxWildcard("tap"), natsx.UserInboxWildcard(b.Node), subjB, telemetry.PowerWildcard,
		telemetry.RollupWildcard, telemetry.AlertWildcard, telemetry.DeadLetterWildcard, "$JS.>", "$JS.API.>",
		"$KV.>", "$JS.ACK.>", ">", subjA} // A may publish its own subject, not read it
	var wantSubViolations []string
	for _, s := range denied {
		if _, err := ncA.Subscribe(s, func(m *nats.Msg) { aGot.Add(1); aSubjects.Store(m.Subject, true) }); err != nil {
			t.Fatal(err)
		}
		wantSubViolations = append(wantSubViolations, fmt.Sprintf("Permissions Violation for Subscription to %q", s))
	}
	if _, err := ncA.QueueSubscribe(telemetry.PowerWildcard, "q", func(*nats.Msg) { aGot.Add(1) }); err != nil {
		t.Fatal(err)
	}
	// Its own inbox is allowed: JetStream acks come there (no violation below).
	if _, err := ncA.Subscribe(natsx.UserInboxWildcard(a.Node), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	forged := []string{subjC, strings.TrimSuffix(subjA, a.Node) + c.Node, strings.TrimSuffix(subjC, c.Node) + a.Node,
		telemetry.RollupPrefix + ".hall.dc1.h1", telemetry.AlertPrefix + ".critical.x", telemetry.DeadLetterPrefix + ".subject",
		"$KV." + acfg.KVBucket + ".hall_power_test", "$JS.API.STREAM.DELETE." + telemetry.StreamPower, natsx.UserInboxPrefix("ingest") + ".x"}
	for _, s := range forged {
		if err := ncA.Publish(s, []byte("forged")); err != nil {
			t.Fatal(err)
		}
	}
	var wantPubViolations []string
	for _, s := range forged {
		wantPubViolations = append(wantPubViolations, fmt.Sprintf("Permissions Violation for Publish to %q", s))
	}
	aErrs.waitAll(t, "node A", append(wantSubViolations, wantPubViolations...))

	// A's own subject works through JetStream once ingest made the stream.
	jsA, err := jetstream.New(ncA)
	if err != nil {
		t.Fatal(err)
	}
	fleet, err := sim.NewFleet(sim.DefaultConfig(), []telemetry.Location{a})
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	end := time.Now().Truncate(time.Second)
	fleet.Report(&rep, 0, end, time.Second, 100*time.Millisecond)
	good, _ := proto.Marshal(&rep)
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := jsA.Publish(pctx, subjA, good, jetstream.WithMsgID(telemetry.MsgID(a.Node, end.UnixNano())))
		pcancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node A publishing its own report: %v", err)
		}
	}
	if _, err := jsA.Publish(ctx, subjA, []byte("not a protobuf")); err != nil { // → dead letter
		t.Fatal(err)
	}
	// A has no JetStream API at all: it can neither read, nor consume, nor manage.
	for what, f := range map[string]func(context.Context) error{
		"stream info": func(c context.Context) error { _, err := jsA.Stream(c, telemetry.StreamPower); return err },
		"consumer create": func(c context.Context) error {
			_, err := jsA.CreateOrUpdateConsumer(c, telemetry.StreamPower, jetstream.ConsumerConfig{Durable: "snoop"})
			return err
		},
		"kv bind":       func(c context.Context) error { _, err := jsA.KeyValue(c, acfg.KVBucket); return err },
		"stream delete": func(c context.Context) error { return jsA.DeleteStream(c, telemetry.StreamRollup) },
		"stream create": func(c context.Context) error {
			_, err := jsA.CreateStream(c, jetstream.StreamConfig{Name: "SNOOP", Subjects: []string{"megawatch.v1.>"}})
			return err
		},
	} {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		if err := f(rctx); err == nil {
			t.Errorf("node A: %s succeeded", what)
		}
		rcancel()
	}

	// The services do their whole job: reports of B (real collector) and A,
	// rollups and alert events reach the line-protocol file, A's bad
	// message is dead-lettered, alert state is in KV.
	inJS, err := jetstream.New(d.connect(t, d.serviceCreds(natsauth.RoleIngest), svcErrs.handler()))
	if err != nil {
		t.Fatal(err)
	}
	alJS, err := jetstream.New(d.connect(t, d.serviceCreds(natsauth.RoleAlerts), svcErrs.handler()))
	if err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		out, _ := os.ReadFile(lp)
		got := string(out)
		var dead uint64
		if s, err := inJS.Stream(ctx, telemetry.StreamDeadLetter); err == nil {
			if info, err := s.Info(ctx); err == nil {
				dead = info.State.Msgs
			}
		}
		var keys int
		if kv, err := alJS.KeyValue(ctx, acfg.KVBucket); err == nil {
			if ks, err := kv.ListKeys(ctx); err == nil {
				for range ks.Keys() {
					keys++
				}
			}
		}
		if strings.Contains(got, "node="+b.Node) && strings.Contains(got, "node="+a.Node) &&
			strings.Contains(got, "rollup,") && strings.Contains(got, "alert,") && dead > 0 && keys > 0 && tapGot.Load() > 0 {
			if strings.Contains(got, "node="+c.Node) {
				t.Errorf("a forged report as %s reached InfluxDB", c.Node)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s: node B %v, node A %v, rollup %v, alert %v, dead letters %d, KV keys %d, tap got %d; service errors %q",
				strings.Contains(got, "node="+b.Node), strings.Contains(got, "node="+a.Node), strings.Contains(got, "rollup,"),
				strings.Contains(got, "alert,"), dead, keys, tapGot.Load(), svcErrs.first())
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = ncA.Flush()
	if n := aGot.Load(); n != 0 {
		var subs []string
		aSubjects.Range(func(k, _ any) bool { subs = append(subs, k.(string)); return true })
		t.Errorf("node A received %d messages not meant for it, on %q", n, subs)
	}
	tapErrs.waitAll(t, "tap", []string{fmt.Sprintf("Permissions Violation for Publish to %q", subjB)})
	// A node's messages are capped at 64 KiB, even on its own subject: the
	// server enforces its user limit and announces it to the client.
	if mp := ncA.MaxPayload(); mp != natsauth.NodeMaxPayload {
		t.Errorf("node A's max payload %d, want %d", mp, natsauth.NodeMaxPayload)
	}
	if err := ncA.Publish(subjA, make([]byte, natsauth.NodeMaxPayload+1)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Errorf("node A's oversized message: %v", err)
	}
	if errs := svcErrs.all(); len(errs) > 0 {
		t.Errorf("collector, ingest and alerts connections saw %d errors: %q", len(errs), svcErrs.first())
	}
}

// Revoking a node: after `--revoke <node>` and a server restart its old
// creds are refused; the node's new creds and every other node work.
func TestNATSAccountsRevoke(t *testing.T) {
	d := newNATSDeployment(t)
	a, b := "gpu-h1-r01-rk01-n01", "gpu-h1-r01-rk02-n01"
	old := filepath.Join(t.TempDir(), "old.creds")
	data, err := os.ReadFile(d.nodeCreds(a))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(old, data, 0o600); err != nil {
		t.Fatal(err)
	}
	d.connect(t, old).Close()

	var stdout, stderr bytes.Buffer
	args := append(append([]string{}, d.args...), "--revoke", a)
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "1 keys revoked") {
		t.Errorf("output: %s", stdout.String())
	}
	d.srv.Kill()
	d.srv.Restart(t)
	_, err = natsx.Connect(d.config(old), nil, nats.RetryOnFailedConnect(false))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Errorf("revoked creds: %v", err)
	}
	d.connect(t, d.nodeCreds(a)).Close() // re-issued with a new key
	d.connect(t, d.nodeCreds(b)).Close()
	// A later run keeps the revocation.
	if code := run(context.Background(), d.args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	d.srv.Kill()
	d.srv.Restart(t)
	if _, err := natsx.Connect(d.config(old), nil, nats.RetryOnFailedConnect(false)); err == nil {
		t.Error("revoked creds accepted after a later run")
	}
}
