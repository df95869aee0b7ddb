package configs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// nodeTemplate is the templated publish permission of the "node" signing
// key: a collector may publish only under its own place and name.
const nodeTemplate = "megawatch.v1.power.{{tag(site)}}.{{tag(hall)}}.{{tag(row)}}.{{tag(rack)}}.{{name()}}"

// writeTestCA writes ca.pem, server.pem and server-key.pem (for 127.0.0.1
// and localhost) under dir.
func writeTestCA(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "megawatch test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "megawatch-nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"ca.pem":         {Type: "CERTIFICATE", Bytes: caDER},
		"server.pem":     {Type: "CERTIFICATE", Bytes: srvDER},
		"server-key.pem": {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// natsAuth is what `nsc` would produce: operator, system and MEGAWATCH
// accounts, the "node" scoped signing key, and creds files.
type natsAuth struct {
	dir     string
	acc     nkeys.KeyPair // MEGAWATCH account identity key
	nodeKey nkeys.KeyPair // scoped signing key, role "node"
	accPub  string
}

func newNATSAuth(t *testing.T, dir string) (*natsAuth, string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	op, err := nkeys.CreateOperator()
	must(err)
	opPub, _ := op.PublicKey()
	sys, err := nkeys.CreateAccount()
	must(err)
	sysPub, _ := sys.PublicKey()
	acc, err := nkeys.CreateAccount()
	must(err)
	accPub, _ := acc.PublicKey()
	nodeKey, err := nkeys.CreateAccount()
	must(err)
	nodeKeyPub, _ := nodeKey.PublicKey()

	opc := jwt.NewOperatorClaims(opPub)
	opc.Name = "megawatch"
	opc.SystemAccount = sysPub
	opJWT, err := opc.Encode(op)
	must(err)

	sysc := jwt.NewAccountClaims(sysPub)
	sysc.Name = "SYS"
	sysJWT, err := sysc.Encode(op)
	must(err)

	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "MEGAWATCH"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1}
	scope := jwt.NewUserScope()
	scope.Key = nodeKeyPub
	scope.Role = "node"
	scope.Description = "GPU node collectors: publish own power subject only"
	scope.Template.Pub.Allow.Add(nodeTemplate)
	scope.Template.Sub.Allow.Add("_INBOX.>")
	ac.SigningKeys.AddScopedSigner(scope)
	accJWT, err := ac.Encode(op)
	must(err)

	conf := fmt.Sprintf(`operator: %q
system_account: %s
resolver: { type: full, dir: %q, allow_delete: false, interval: "2m" }
resolver_preload: {
  %s: %q
  %s: %q
}
`, opJWT, sysPub, filepath.Join(dir, "jwt"), sysPub, sysJWT, accPub, accJWT)
	return &natsAuth{dir: dir, acc: acc, nodeKey: nodeKey, accPub: accPub}, conf
}

// nodeCreds issues a node user with the scoped key: only name and tags,
// the permissions come from the key's template.
func (a *natsAuth) nodeCreds(t *testing.T, l telemetry.Location) string {
	t.Helper()
	u, _ := nkeys.CreateUser()
	pub, _ := u.PublicKey()
	seed, _ := u.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = l.Node
	uc.IssuerAccount = a.accPub
	uc.UserPermissionLimits = jwt.UserPermissionLimits{} // scoped users carry none: the key's template applies
	uc.Tags.Add("site:"+l.Site, "hall:"+l.Hall, "row:"+l.Row, "rack:"+l.Rack)
	tok, err := uc.Encode(a.nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	return a.writeCreds(t, l.Node, tok, seed)
}

// serviceCreds issues a user with explicit permissions (ingest, alerts).
func (a *natsAuth) serviceCreds(t *testing.T, name string, pub, sub []string) string {
	t.Helper()
	u, _ := nkeys.CreateUser()
	upub, _ := u.PublicKey()
	seed, _ := u.Seed()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.Pub.Allow.Add(pub...)
	uc.Sub.Allow.Add(sub...)
	tok, err := uc.Encode(a.acc)
	if err != nil {
		t.Fatal(err)
	}
	return a.writeCreds(t, name, tok, seed)
}

func (a *natsAuth) writeCreds(t *testing.T, name, tok string, seed []byte) string {
	t.Helper()
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(a.dir, name+".creds")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Permissions of the service users, as documented in docs/operations.md.
var (
	ingestPub = []string{"$JS.API.>", "$JS.ACK.>", "megawatch.v1.deadletter.>"}
	ingestSub = []string{"_INBOX.>"}
	alertsPub = []string{"$JS.API.>", "$KV.>", "megawatch.v1.rollup.>", "megawatch.v1.alert.>"}
	alertsSub = []string{"_INBOX.>", "megawatch.v1.power.>", "megawatch.v1.rollup.>", "$KV.>"}
)

// renderNATSConfig writes configs/nats/nats-server.conf into dir with its
// paths moved under dir and the monitoring port made free.
func renderNATSConfig(t *testing.T, dir, auth string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("nats", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for old, repl := range map[string]string{
		"/etc/nats/":            dir + "/",
		`"/var/lib/nats"`:       fmt.Sprintf("%q", filepath.Join(dir, "js")),
		"127.0.0.1:8222":        fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		"max_file_store: 4TB":   "max_file_store: 1GB",
		"max_memory_store: 8GB": "max_memory_store: 256MB",
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("nats-server.conf no longer contains %q: update the test rendering", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "nats-server.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// natsConnect connects with a creds file over TLS (the test CA) and fails
// the test unless the connection is up and encrypted.
type natsConnect func(creds string, extra ...nats.Option) *nats.Conn

// startSecureNATS runs nats-server with configs/nats/nats-server.conf
// (TLS with a test CA, JetStream, the JWT operator and accounts).
func startSecureNATS(t *testing.T) (*testenv.NATSServer, *natsAuth, natsConnect) {
	t.Helper()
	dir := t.TempDir()
	writeTestCA(t, filepath.Join(dir, "tls"))
	auth, authConf := newNATSAuth(t, dir)
	// Our own invocation rather than testenv.StartNATSServer, whose -js -sd
	// would clash with the config's jetstream block.
	port := testenv.FreePort(t)
	srv := &testenv.NATSServer{
		Proc: testenv.StartProc(t, "nats-server", testenv.Binary(t, "nats-server"),
			"-c", renderNATSConfig(t, dir, authConf), "-a", "127.0.0.1", "-p", fmt.Sprint(port)),
		URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port,
	}
	srv.WaitReady(t)
	ca := filepath.Join(dir, "tls", "ca.pem")
	connect := func(creds string, extra ...nats.Option) *nats.Conn {
		t.Helper()
		cfg := natsx.DefaultConfig()
		cfg.Servers = []string{srv.URL}
		cfg.CredsFile = creds
		cfg.TLSCAFile = ca
		cfg.Name = filepath.Base(creds)
		if err := cfg.Validate("nats"); err != nil {
			t.Fatal(err)
		}
		nc, err := natsx.Connect(cfg, nil, append(extra, nats.RetryOnFailedConnect(false))...)
		if err != nil {
			t.Fatalf("connect %s: %v\n%s", cfg.Name, err, srv.Output())
		}
		t.Cleanup(nc.Close)
		if !nc.TLSRequired() {
			t.Fatalf("%s: connection is not TLS", cfg.Name)
		}
		return nc
	}
	return srv, auth, connect
}

// TestNATSNodeCannotPublishAsAnotherNode runs the real nats-server with
// configs/nats/nats-server.conf (TLS, JetStream, JWT accounts): node A
// publishes its own reports; publishing as node B is a permissions
// violation and never reaches the stream; ingest and alerts consume.
func TestNATSNodeCannotPublishAsAnotherNode(t *testing.T) {
	testenv.Short(t)
	_, auth, connect := startSecureNATS(t)
	nodeA := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "rk01", Node: "gpu-h1-r01-rk01-n01"}
	nodeB := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "rk02", Node: "gpu-h1-r01-rk02-n01"}
	subjA, _ := telemetry.PowerSubject(nodeA)
	subjB, _ := telemetry.PowerSubject(nodeB)
	// Node A under B's rack, and another node's name under A's rack: both forged.
	forged := []string{subjB,
		strings.TrimSuffix(subjA, nodeA.Node) + nodeB.Node,
		"megawatch.v1.power.dc1.h1.r01.rk02." + nodeA.Node}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// ingest sets up the streams (as it does at start) and a durable consumer.
	ingestNC := connect(auth.serviceCreds(t, "ingest", ingestPub, ingestSub))
	ingestJS, err := jetstream.New(ingestNC)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsx.EnsureStreams(ctx, ingestJS, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatalf("ingest: ensure streams: %v", err)
	}
	cons, err := ingestJS.CreateOrUpdateConsumer(ctx, telemetry.StreamPower, jetstream.ConsumerConfig{
		Durable: "ingest", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: telemetry.PowerWildcard})
	if err != nil {
		t.Fatalf("ingest: consumer: %v", err)
	}

	// alerts listens to every node's reports on core NATS.
	alertsNC := connect(auth.serviceCreds(t, "alerts", alertsPub, alertsSub))
	alertsGot := make(chan string, 16)
	if _, err := alertsNC.Subscribe(telemetry.PowerWildcard, func(m *nats.Msg) { alertsGot <- m.Subject }); err != nil {
		t.Fatal(err)
	}
	if err := alertsNC.Flush(); err != nil {
		t.Fatal(err)
	}

	// Node A publishes its own report through JetStream: acknowledged.
	var mu sync.Mutex
	var asyncErrs []string
	ncA := connect(auth.nodeCreds(t, nodeA), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		asyncErrs = append(asyncErrs, err.Error())
		mu.Unlock()
	}))
	jsA, err := jetstream.New(ncA)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := jsA.Publish(ctx, subjA, []byte("report-a"), jetstream.WithMsgID(telemetry.MsgID(nodeA.Node, 1)))
	if err != nil {
		t.Fatalf("node A publishing its own subject: %v", err)
	}
	if ack.Stream != telemetry.StreamPower {
		t.Fatalf("ack from stream %q", ack.Stream)
	}

	// Node A publishing as node B: the server refuses each with a
	// permissions violation, and nothing reaches the stream.
	for _, s := range forged {
		if err := ncA.Publish(s, []byte("forged")); err != nil {
			t.Fatal(err)
		}
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	if _, err := jsA.Publish(pctx, subjB, []byte("forged-js")); err == nil {
		t.Errorf("JetStream publish as node B was acknowledged")
	}
	pcancel()
	_ = ncA.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		joined := strings.Join(asyncErrs, "\n")
		mu.Unlock()
		missing := 0
		for _, s := range forged {
			if !strings.Contains(joined, fmt.Sprintf("Permissions Violation for Publish to %q", s)) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d forged publishes without a permissions violation; errors seen:\n%s", missing, joined)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A node cannot administer JetStream or read other nodes either.
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	if err := jsA.DeleteStream(dctx, telemetry.StreamPower); err == nil {
		t.Error("node A deleted the power stream")
	}
	dcancel()

	// ingest consumes exactly node A's one report.
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, m.Subject()+"="+string(m.Data()))
		if err := m.Ack(); err != nil {
			t.Errorf("ingest ack: %v", err)
		}
	}
	if len(got) != 1 || got[0] != subjA+"=report-a" {
		t.Errorf("ingest consumed %q, want only node A's report", got)
	}
	st, err := ingestJS.Stream(ctx, telemetry.StreamPower)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("power stream holds %v messages (err %v), want 1", info.State.Msgs, err)
	}

	// alerts saw node A's report and nothing forged.
	select {
	case s := <-alertsGot:
		if s != subjA {
			t.Errorf("alerts got %q first, want %q", s, subjA)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("alerts did not receive node A's report")
	}
	_ = alertsNC.Flush()
	select {
	case s := <-alertsGot:
		t.Errorf("alerts received a forged report on %q", s)
	default:
	}
}

// TestNATSServicesRunWithTheirPermissions runs the real ingest and alerts
// with the documented users' permissions against the secured server: a node
// publishes real reports; alerts aggregates them and publishes rollups,
// alert events and KV state; ingest writes reports, rollups and alert
// events (to a line-protocol file) and dead-letters a bad message. No
// service connection may see a permissions violation.
func TestNATSServicesRunWithTheirPermissions(t *testing.T) {
	testenv.Short(t)
	_, auth, connect := startSecureNATS(t)
	var mu sync.Mutex
	var violations []string
	record := nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		violations = append(violations, err.Error())
		mu.Unlock()
	})
	topo, err := topology.Load("topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	node := topo.Nodes()[0].Location
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	logger := slog.New(slog.DiscardHandler)

	acfg := alerts.DefaultConfig()
	acfg.HTTPAddr = ""
	acfg.Notifiers.Log.Enabled = false
	low := 0.0001
	acfg.Rules = []rules.Rule{{Name: "hall_power_test", Level: "hall", Metric: "power_mw", Threshold: &low, Severity: "warning"}}
	eng, err := alerts.New(acfg, topo, connect(auth.serviceCreds(t, "alerts", alertsPub, alertsSub), record), logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = eng.Run(ctx) }) // creates MEGAWATCH_ROLLUP and the KV bucket

	lp := filepath.Join(t.TempDir(), "out.lp")
	icfg := ingest.DefaultConfig()
	icfg.BatchWait = 100 * time.Millisecond
	icfg.MetricsAddr = ""
	icfg.TopologyFile = "topology.yaml"
	icfg.Targets = []ingest.Target{{Name: "file", File: lp}}
	inNC := connect(auth.serviceCreds(t, "ingest", ingestPub, ingestSub), record)
	js, err := jetstream.New(inNC)
	if err != nil {
		t.Fatal(err)
	}
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	in, err := ingest.New(icfg, inNC, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = in.Run(ctx) })

	nodeNC := connect(auth.nodeCreds(t, node), record)
	njs, err := jetstream.New(nodeNC)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := telemetry.PowerSubject(node)
	if _, err := njs.Publish(ctx, subj, []byte("not a protobuf")); err != nil { // → dead letter
		t.Fatal(err)
	}
	fleet, err := sim.NewFleet(sim.DefaultConfig(), []telemetry.Location{node})
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	for range 4 {
		end := time.Now().Truncate(time.Second).Add(time.Second)
		time.Sleep(time.Until(end))
		fleet.Report(&rep, 0, end, time.Second, 100*time.Millisecond)
		b, _ := proto.Marshal(&rep)
		if _, err := njs.Publish(ctx, subj, b, jetstream.WithMsgID(telemetry.MsgID(node.Node, end.UnixNano()))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _ := os.ReadFile(lp)
		dl, _ := js.Stream(ctx, telemetry.StreamDeadLetter)
		var dead uint64
		if dl != nil {
			if info, err := dl.Info(ctx); err == nil {
				dead = info.State.Msgs
			}
		}
		got := string(out)
		if strings.Contains(got, "node,") && strings.Contains(got, "rollup,") && strings.Contains(got, "alert,") && dead > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: dead letters %d, line protocol:\n%.2000s", dead, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(violations) > 0 {
		t.Errorf("service connections saw errors: %q", violations)
	}
}
