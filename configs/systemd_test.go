package configs_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// unit is a parsed systemd unit file: key → values, in order.
type unit struct {
	name string
	keys map[string][]string
}

func (u unit) get(k string) []string { return u.keys[k] }

func (u unit) one(t *testing.T, k string) string {
	t.Helper()
	v := u.keys[k]
	if len(v) != 1 {
		t.Fatalf("%s: %s= set %d times, want once", u.name, k, len(v))
	}
	return v[0]
}

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{name: filepath.Base(path), keys: map[string][]string{}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == ';' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: %q is not key=value", path, l)
		}
		u.keys[k] = append(u.keys[k], v)
	}
	return u
}

var unitNames = []string{"megawatch-collector.service", "megawatch-ingest.service", "megawatch-alerts.service", "megawatch-meters.service"}

// TestSystemdUnitsLint checks what systemd-analyze does not: no
// Documentation= that is never installed, optional EnvironmentFile=s,
// no ProcSubset=pid (hides /proc/stat and /proc/driver), thread limits that
// fit a 224-thread node, and secrets only through LoadCredential= from
// /etc/megawatch/credentials.
func TestSystemdUnitsLint(t *testing.T) {
	for _, name := range unitNames {
		u := parseUnit(t, filepath.Join("systemd", name))
		for _, d := range u.get("Documentation") {
			if strings.HasPrefix(d, "file:") {
				t.Errorf("%s: Documentation=%s is not installed by anything", name, d)
			}
		}
		for _, e := range u.get("EnvironmentFile") {
			if !strings.HasPrefix(e, "-") {
				t.Errorf("%s: EnvironmentFile=%s fails the unit when the file is absent; prefix it with -", name, e)
			}
		}
		if v := u.get("ProcSubset"); len(v) > 0 && v[0] == "pid" {
			t.Errorf("%s: ProcSubset=pid hides /proc/stat (process_start_time_seconds) and /proc/driver (NVML)", name)
		}
		if u.one(t, "DynamicUser") != "yes" {
			t.Errorf("%s: want DynamicUser=yes", name)
		}
		tasks, err := strconv.Atoi(u.one(t, "TasksMax"))
		if err != nil || tasks < 512 {
			t.Errorf("%s: TasksMax=%v: a 224-thread node's Go runtime needs more than that", name, u.get("TasksMax"))
		}
		if len(u.get("LoadCredential")) == 0 {
			t.Errorf("%s: no LoadCredential= (the NATS creds)", name)
		}
		for _, c := range u.get("LoadCredential") {
			if _, src, _ := strings.Cut(c, ":"); !strings.HasPrefix(src, "/etc/megawatch/credentials/") {
				t.Errorf("%s: LoadCredential=%s: secrets live in /etc/megawatch/credentials (root 0700)", name, c)
			}
		}
	}
	u := parseUnit(t, filepath.Join("systemd", "megawatch-collector.service"))
	if v := u.get("PrivateDevices"); len(v) > 0 && v[0] == "yes" {
		t.Error("collector: PrivateDevices=yes hides /dev/nvidia*")
	}
}

// megawatchBinary builds ./cmd/megawatch once per test.
func megawatchBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "megawatch")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/megawatch")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSystemdAnalyzeVerify runs systemd-analyze verify on the shipped
// units (ExecStart pointed at a freshly built binary, since
// /usr/local/bin/megawatch is not installed here).
func TestSystemdAnalyzeVerify(t *testing.T) {
	testenv.Short(t)
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("systemd-analyze not found: apt-get install -y systemd (scripts/install-test-servers.sh)")
		}
		t.Skip("systemd-analyze not found")
	}
	bin := megawatchBinary(t)
	dir := t.TempDir()
	var files []string
	for _, name := range unitNames {
		b, err := os.ReadFile(filepath.Join("systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/megawatch", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	out, err := exec.Command(sa, append([]string{"verify"}, files...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// sdNATS is a nats-server in operator (JWT) mode with TLS, as the shipped
// configs expect: creds files and a CA.
type sdNATS struct {
	url, ca string
	acc     nkeys.KeyPair
	accPub  string
	dir     string
}

func startSDNATS(t *testing.T) *sdNATS {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	// TLS: a CA and a server certificate for 127.0.0.1.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	caCert, err := x509.ParseCertificate(caDER)
	must(err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	srvDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, caCert, &srvKey.PublicKey, caKey)
	must(err)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	must(err)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		must(os.WriteFile(p, b, 0o600))
		return p
	}
	ca := write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	cert := write("server.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}))
	key := write("server-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))

	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	sys, _ := nkeys.CreateAccount()
	sysPub, _ := sys.PublicKey()
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	opc := jwt.NewOperatorClaims(opPub)
	opc.SystemAccount = sysPub
	opJWT, err := opc.Encode(op)
	must(err)
	sysJWT, err := jwt.NewAccountClaims(sysPub).Encode(op)
	must(err)
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "MEGAWATCH"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1, MaxAckPending: -1}
	accJWT, err := ac.Encode(op)
	must(err)
	port := testenv.FreePort(t)
	conf := write("nats.conf", fmt.Appendf(nil, `listen: "127.0.0.1:%d"
operator: %q
system_account: %s
resolver: MEMORY
resolver_preload: { %s: %q, %s: %q }
jetstream { store_dir: %q }
tls { cert_file: %q, key_file: %q }
`, port, opJWT, sysPub, sysPub, sysJWT, accPub, accJWT, filepath.Join(dir, "js"), cert, key))
	srv := &testenv.NATSServer{Proc: testenv.StartProc(t, "nats-server", testenv.Binary(t, "nats-server"), "-c", conf),
		URL: fmt.Sprintf("tls://127.0.0.1:%d", port), Port: port}
	srv.WaitReady(t)
	return &sdNATS{url: srv.URL, ca: ca, acc: acc, accPub: accPub, dir: dir}
}

// creds issues a user of the account (no permission limits: this test is
// about file access; docs/nats.md's isolation is tested elsewhere).
func (s *sdNATS) creds(t *testing.T, name string) []byte {
	t.Helper()
	u, _ := nkeys.CreateUser()
	pub, _ := u.PublicKey()
	seed, _ := u.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	tok, err := uc.Encode(s.acc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serviceUID is the unprivileged uid the binaries run as here, as a
// DynamicUser= would: nobody.
const serviceUID = 65534

// layout is one host's files, laid out as docs/operations.md and the unit
// headers say, under root instead of /.
type layout struct {
	root string
}

func (l layout) path(p string) string { return filepath.Join(l.root, p) }

// install writes content to the absolute path p (under root) with the
// mode and owner given, creating parent directories 0755 root.
func (l layout) install(t *testing.T, p string, content []byte, mode os.FileMode, uid int) {
	t.Helper()
	full := l.path(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, content, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(full, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func (l layout) mkdir(t *testing.T, p string, mode os.FileMode, uid int) {
	t.Helper()
	full := l.path(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(full, mode); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	if err := os.Chmod(full, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(full, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// openTempRoot makes a temp dir that other uids can traverse (t.TempDir's
// are 0700).
func openTempRoot(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/" && p != "."; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// startUnit does what systemd does for u, under l.root: reads the
// EnvironmentFile=s (as root), copies each LoadCredential= source into a
// credentials directory readable by the service uid only, creates
// StateDirectory= owned by it, and runs ExecStart (plus extra args) as
// serviceUID with $CREDENTIALS_DIRECTORY set.
func startUnit(t *testing.T, l layout, u unit, bin string, extra ...string) *exec.Cmd {
	t.Helper()
	env := []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	for _, e := range u.get("Environment") {
		env = append(env, e)
	}
	for _, ef := range u.get("EnvironmentFile") {
		b, err := os.ReadFile(l.path(strings.TrimPrefix(ef, "-")))
		if err != nil {
			if strings.HasPrefix(ef, "-") && os.IsNotExist(err) {
				continue
			}
			t.Fatalf("%s: EnvironmentFile=%s: %v", u.name, ef, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && line[0] != '#' {
				env = append(env, line)
			}
		}
	}
	credDir := "/run/credentials/" + u.name
	l.mkdir(t, credDir, 0o500, serviceUID)
	for _, c := range u.get("LoadCredential") {
		id, src, _ := strings.Cut(c, ":")
		b, err := os.ReadFile(l.path(src))
		if err != nil {
			t.Fatalf("%s: LoadCredential=%s: %v", u.name, c, err)
		}
		l.install(t, credDir+"/"+id, b, 0o400, serviceUID)
	}
	env = append(env, "CREDENTIALS_DIRECTORY="+l.path(credDir))
	for _, sd := range u.get("StateDirectory") {
		l.mkdir(t, "/var/lib/"+sd, 0o700, serviceUID)
	}
	args := strings.Fields(u.one(t, "ExecStart"))
	if args[0] != "/usr/local/bin/megawatch" {
		t.Fatalf("%s: ExecStart=%s", u.name, args[0])
	}
	for i, a := range args[1:] {
		if strings.HasPrefix(a, "/") {
			args[i+1] = l.path(a)
		}
	}
	cmd := exec.Command(bin, append(args[1:], extra...)...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: serviceUID, Gid: serviceUID}, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// runUntilReady starts cmd and waits for url to answer 200; it returns the
// body. The process is stopped at the end of the test.
func runUntilReady(t *testing.T, cmd *exec.Cmd, url string) string {
	t.Helper()
	var out syncWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("%s exited: %v\n%s", cmd.Args, werr, out.String())
		default:
		}
		if resp, err := http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s after 60 s:\n%s", cmd.Args, url, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type syncWriter struct {
	mu  chan struct{}
	buf strings.Builder
}

func (w *syncWriter) lock() {
	if w.mu == nil {
		w.mu = make(chan struct{}, 1)
	}
	w.mu <- struct{}{}
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.lock()
	defer func() { <-w.mu }()
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.lock()
	defer func() { <-w.mu }()
	return w.buf.String()
}

// shippedConfig reads configs/systemd/<name> and rewrites what differs on
// a test host: absolute paths move under root, and the example servers
// and ports become the test's.
func shippedConfig(t *testing.T, name, root string, repl map[string]string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, r := range repl {
		if !strings.Contains(s, old) {
			t.Fatalf("systemd/%s no longer contains %q: update the test", name, old)
		}
		s = strings.ReplaceAll(s, old, r)
	}
	for _, p := range []string{"/etc/megawatch/", "/var/lib/megawatch-collector/"} {
		s = strings.ReplaceAll(s, p, root+p)
	}
	return []byte(s)
}

// TestSystemdLayoutAsUnprivilegedUser lays out /etc/megawatch exactly as
// the units' headers and docs/operations.md say (configs 0644 root, the
// credentials directory 0700 root with 0600 files), does what systemd
// does for each unit (LoadCredential=, EnvironmentFile=, StateDirectory=),
// and runs each binary as uid 65534 against real servers (nats-server in
// JWT mode with TLS, influxd, an Alertmanager stand-in): each reads its
// config, topology, CA and secrets and becomes ready; alerts pages through
// the Alertmanager and PagerDuty from its env file. A secret left where
// only root reads it (the old layout) stops the service.
func TestSystemdLayoutAsUnprivilegedUser(t *testing.T) {
	testenv.Short(t)
	if os.Geteuid() != 0 {
		if testenv.InCI() {
			t.Fatal("this test switches to uid 65534 and needs root (CI runs as root)")
		}
		t.Skip("needs root to run the binaries as another uid")
	}
	bin := megawatchBinary(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(filepath.Dir(bin)); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		_ = os.Chmod(p, 0o755)
	}
	nsrv := startSDNATS(t)
	infl := testenv.StartInfluxd(t)
	infl.CreateDB(t, "megawatch")
	am := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer am.Close()
	topoSrc, err := os.ReadFile("topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	topo, err := topology.Parse(topoSrc, "topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(nsrv.ca)
	if err != nil {
		t.Fatal(err)
	}

	l := layout{root: openTempRoot(t)}
	// What every host gets (docs/operations.md, systemd).
	l.mkdir(t, "/etc/megawatch", 0o755, 0)
	l.mkdir(t, "/etc/megawatch/tls", 0o755, 0)
	l.install(t, "/etc/megawatch/topology.yaml", topoSrc, 0o644, 0)
	l.install(t, "/etc/megawatch/tls/ca.pem", ca, 0o644, 0)
	l.mkdir(t, "/etc/megawatch/credentials", 0o700, 0)
	natsURL := "tls://nats.example.internal:4222"

	t.Run("ingest", func(t *testing.T) {
		port := testenv.FreePort(t)
		l.install(t, "/etc/megawatch/ingest.yaml", shippedConfig(t, "ingest.yaml", l.root, map[string]string{
			natsURL: nsrv.url, "http://influxdb.example.internal:8086": infl.URL, "replicas: 3": "replicas: 1",
			"127.0.0.1:9102": fmt.Sprintf("127.0.0.1:%d", port)}), 0o644, 0)
		l.install(t, "/etc/megawatch/credentials/ingest-nats.creds", nsrv.creds(t, "ingest"), 0o600, 0)
		l.install(t, "/etc/megawatch/credentials/influx-token", []byte("test-token"), 0o600, 0)
		u := parseUnit(t, filepath.Join("systemd", "megawatch-ingest.service"))
		runUntilReady(t, startUnit(t, l, u, bin), fmt.Sprintf("http://127.0.0.1:%d/readyz", port))

		// The old layout: the creds where only root reads them.
		cmd := startUnit(t, l, u, bin)
		for i, e := range cmd.Env {
			if strings.HasPrefix(e, "CREDENTIALS_DIRECTORY=") {
				cmd.Env[i] = "CREDENTIALS_DIRECTORY=" + l.path("/etc/megawatch/credentials")
			}
		}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "permission denied") {
			t.Errorf("ingest with root-only secrets: %v, want a permission error:\n%s", err, out)
		}
	})
	t.Run("alerts", func(t *testing.T) {
		port := testenv.FreePort(t)
		l.install(t, "/etc/megawatch/alerts.yaml", shippedConfig(t, "alerts.yaml", l.root, map[string]string{
			natsURL: nsrv.url, "replicas: 3": "replicas: 1", "127.0.0.1:8080": fmt.Sprintf("127.0.0.1:%d", port)}), 0o644, 0)
		l.install(t, "/etc/megawatch/credentials/alerts-nats.creds", nsrv.creds(t, "alerts"), 0o600, 0)
		l.install(t, "/etc/megawatch/alerts.env", fmt.Appendf(nil, "MEGAWATCH_ALERTMANAGER_URLS=%s\nPAGERDUTY_ROUTING_KEY=test-key\n", am.URL), 0o600, 0)
		u := parseUnit(t, filepath.Join("systemd", "megawatch-alerts.service"))
		ready := runUntilReady(t, startUnit(t, l, u, bin), fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		if !strings.Contains(ready, "alertmanager:"+am.URL) || !strings.Contains(ready, "pagerduty") {
			t.Errorf("/readyz %q: want paging through the Alertmanager and PagerDuty of alerts.env", ready)
		}
	})
	t.Run("meters", func(t *testing.T) {
		// The shipped topology's meters: PDUs (SNMP, community from
		// meters.env) and Modbus meters at example hosts that do not
		// resolve here, so every meter is read and reported stale; the
		// poller still starts, publishes and becomes ready.
		port := testenv.FreePort(t)
		l.install(t, "/etc/megawatch/meters.yaml", shippedConfig(t, "meters.yaml", l.root, map[string]string{
			natsURL: nsrv.url, "replicas: 3": "replicas: 1", "127.0.0.1:9403": fmt.Sprintf("127.0.0.1:%d", port)}), 0o644, 0)
		l.install(t, "/etc/megawatch/credentials/meters-nats.creds", nsrv.creds(t, "meters"), 0o600, 0)
		const community = "test-community-4f2a"
		l.install(t, "/etc/megawatch/meters.env", []byte("MEGAWATCH_PDU_COMMUNITY="+community+"\n"), 0o600, 0)
		u := parseUnit(t, filepath.Join("systemd", "megawatch-meters.service"))
		runUntilReady(t, startUnit(t, l, u, bin), fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `megawatch_meters_configured `+strconv.Itoa(len(topo.Meters()))) || strings.Contains(string(body), community) {
			t.Errorf("meters /metrics: want megawatch_meters_configured %d and no community", len(topo.Meters()))
		}

		// Without meters.env the community is missing: the start fails
		// naming the topology key and the variable, not the value.
		if err := os.Remove(l.path("/etc/megawatch/meters.env")); err != nil {
			t.Fatal(err)
		}
		b, err := startUnit(t, l, u, bin).CombinedOutput()
		if err == nil || !strings.Contains(string(b), "community_env: env var MEGAWATCH_PDU_COMMUNITY is not set") {
			t.Errorf("meters without meters.env: %v, want the missing variable named:\n%s", err, b)
		}
	})
	t.Run("collector", func(t *testing.T) {
		port := testenv.FreePort(t)
		l.install(t, "/etc/megawatch/collector.yaml", shippedConfig(t, "collector.yaml", l.root, map[string]string{
			natsURL: nsrv.url, "127.0.0.1:9401": fmt.Sprintf("127.0.0.1:%d", port)}), 0o644, 0)
		l.install(t, "/etc/megawatch/credentials/collector-nats.creds", nsrv.creds(t, topo.Nodes()[0].Name), 0o600, 0)
		u := parseUnit(t, filepath.Join("systemd", "megawatch-collector.service"))
		// No NVML here: the simulated GPUs, on the topology's first node.
		runUntilReady(t, startUnit(t, l, u, bin, "--sim", "--node", topo.Nodes()[0].Name), fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
		// Its offline buffer went to StateDirectory=, as the service user.
		st, err := os.Stat(l.path("/var/lib/megawatch-collector/buffer"))
		if err != nil {
			t.Fatalf("buffer_dir: %v", err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != serviceUID {
			t.Errorf("buffer dir owned by uid %d, want %d", sys.Uid, serviceUID)
		}
	})
}
