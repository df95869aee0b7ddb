package configs_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	"go.yaml.in/yaml/v3"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/config"
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

// TestNATSNodeCannotPublishAsAnotherNode runs the real nats-server with
// configs/nats/nats-server.conf (TLS, JetStream, JWT accounts): node A
// publishes its own reports; publishing as node B is a permissions
// violation and never reaches the stream; ingest and alerts consume.
func TestNATSNodeCannotPublishAsAnotherNode(t *testing.T) {
	testenv.Short(t)
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

	nodeA := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k01", Node: "gpu-h1-r01-k01-n01"}
	nodeB := telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "k02", Node: "gpu-h1-r01-k02-n01"}
	subjA, _ := telemetry.PowerSubject(nodeA)
	subjB, _ := telemetry.PowerSubject(nodeB)
	// Node A under B's rack, and another node's name under A's rack: both forged.
	forged := []string{subjB,
		strings.TrimSuffix(subjA, nodeA.Node) + nodeB.Node,
		"megawatch.v1.power.dc1.h1.r01.k02." + nodeA.Node}

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
	pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
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
	dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
	if err := jsA.DeleteStream(dctx, telemetry.StreamPower); err == nil {
		t.Error("node A deleted the power stream")
	}
	dcancel()

	// ingest consumes exactly node A's one report.
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
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

// TestDeployFilesParse parses every YAML and JSON file under configs/k8s,
// configs/grafana, configs/alertmanager and configs/nats; Kubernetes
// objects need apiVersion, kind, metadata.name (and a namespace), and the
// megawatch configs in the ConfigMap must decode strictly into the real
// Config types and topology, so the examples cannot rot.
func TestDeployFilesParse(t *testing.T) {
	n := 0
	for _, dir := range []string{"k8s", "grafana", "alertmanager", "nats"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			switch filepath.Ext(path) {
			case ".json":
				var v any
				if err := json.Unmarshal(b, &v); err != nil {
					t.Errorf("%s: %v", path, err)
				}
			case ".yaml", ".yml":
				dec := yaml.NewDecoder(bytes.NewReader(b))
				for i := 0; ; i++ {
					var doc map[string]any
					err := dec.Decode(&doc)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Errorf("%s: document %d: %v", path, i, err)
						break
					}
					if dir == "k8s" {
						checkK8sObject(t, fmt.Sprintf("%s#%d", path, i), doc)
					}
				}
			default:
				return nil
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 10 {
		t.Errorf("only %d YAML/JSON files found", n)
	}
}

func checkK8sObject(t *testing.T, where string, doc map[string]any) {
	t.Helper()
	meta, _ := doc["metadata"].(map[string]any)
	if doc["apiVersion"] == nil || doc["kind"] == nil || meta == nil || meta["name"] == nil {
		t.Errorf("%s: not a Kubernetes object (apiVersion, kind, metadata.name)", where)
		return
	}
	if doc["kind"] != "Namespace" && meta["namespace"] != "megawatch" {
		t.Errorf("%s: %s %v not in namespace megawatch", where, doc["kind"], meta["name"])
	}
	if doc["kind"] != "ConfigMap" {
		return
	}
	data, _ := doc["data"].(map[string]any)
	for key, v := range data {
		s, _ := v.(string)
		var err error
		switch key {
		case "collector.yaml":
			c := collector.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "ingest.yaml":
			c := ingest.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "alerts.yaml":
			c := alerts.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "topology.yaml":
			_, err = topology.Parse([]byte(s), where+" "+key)
		default:
			err = fmt.Errorf("%s: unknown key %q", where, key)
		}
		if err != nil {
			t.Error(err) // names the file, document and key
		}
	}
}
