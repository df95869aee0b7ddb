package natsauth_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"

	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/natsauth"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/topology"
)

var update = flag.Bool("update", false, "rewrite configs/nats/nats-server.conf from natsauth.ServerConf")

const shippedConf = "../../configs/nats/nats-server.conf"

// The shipped server config is what `megawatch nats-accounts` writes with
// its defaults (installed in /etc/nats).
func TestShippedServerConfIsTheDefault(t *testing.T) {
	got, err := natsauth.ServerConf(natsauth.DefaultServerOptions())
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(shippedConf, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(shippedConf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from natsauth.ServerConf(defaults); run go test ./internal/natsauth -update", shippedConf)
	}
}

func testTopology(t *testing.T, yaml string) *topology.Topology {
	t.Helper()
	topo, err := topology.Parse([]byte(yaml), "test-topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return topo
}

const twoRacks = `
domains:
  - name: dc1
    capacity_kw: 1000
    children:
      - name: h1
        capacity_kw: 500
        children:
          - name: r01
            capacity_kw: 100
            children:
              - name: rk[01-02]
                capacity_kw: 30
                nodes: ["gpu-{rack}-n[01-02]"]
`

func userClaims(t *testing.T, path string) *jwt.UserClaims {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

// Generate writes a user for every node (name and tags only: the role's
// template carries the permissions) and every service; a second run
// reuses every key, so creds already handed out stay valid.
func TestGenerateUsersAndIdempotence(t *testing.T) {
	dir := t.TempDir()
	topo := testTopology(t, twoRacks)
	res, err := natsauth.Generate(natsauth.Options{Dir: dir, Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	if res.Nodes != 4 || res.NewUsers != 8 || len(res.Services) != 4 || !res.TLSCreated {
		t.Fatalf("first run: %+v", res)
	}
	uc := userClaims(t, natsauth.NodeCredsPath(dir, "gpu-rk02-n01"))
	if uc.Name != "gpu-rk02-n01" || !uc.HasEmptyPermissions() || uc.IssuerAccount != res.Account {
		t.Errorf("node user: name %q, empty permissions %v, issuer account %q", uc.Name, uc.HasEmptyPermissions(), uc.IssuerAccount)
	}
	for _, tag := range []string{"site:dc1", "hall:h1", "row:r01", "rack:rk02"} {
		if !uc.Tags.Contains(tag) {
			t.Errorf("node user tags %v lack %s", uc.Tags, tag)
		}
	}
	if n, err := natsx.CredsUserName(natsauth.ServiceCredsPath(dir, natsauth.RoleIngest)); err != nil || n != "ingest" {
		t.Errorf("ingest creds name %q, %v", n, err)
	}
	for _, f := range []string{natsauth.AuthFile, natsauth.ConfFile, "keys/operator.nk", "creds/alerts.creds", "tls/server.pem"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 && !strings.HasSuffix(f, ".pem") {
			t.Errorf("%s is mode %v: secrets must be 0600", f, st.Mode().Perm())
		}
	}
	ca1, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.pem"))

	res2, err := natsauth.Generate(natsauth.Options{Dir: dir, Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Operator != res.Operator || res2.Account != res.Account || res2.NewUsers != 0 || res2.TLSCreated {
		t.Errorf("second run changed keys: %+v vs %+v", res2, res)
	}
	if uc2 := userClaims(t, natsauth.NodeCredsPath(dir, "gpu-rk02-n01")); uc2.Subject != uc.Subject {
		t.Errorf("node user key changed: %s → %s", uc.Subject, uc2.Subject)
	}
	if ca2, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.pem")); !bytes.Equal(ca1, ca2) {
		t.Error("the CA was replaced")
	}
}

func TestGenerateRefusesWhatTheTemplateCannotExpress(t *testing.T) {
	f := func(yaml, want string) {
		t.Helper()
		_, err := natsauth.Generate(natsauth.Options{Dir: t.TempDir(), Topology: testTopology(t, yaml)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v, want it to contain %q", err, want)
		}
	}
	upper := strings.Replace(twoRacks, "name: h1", "name: H1", 1)
	f(upper, `hall "H1" must be lower-case`)
	svc := strings.Replace(strings.Replace(twoRacks, "rk[01-02]", "rk01", 1), `nodes: ["gpu-{rack}-n[01-02]"]`, "nodes: [ingest]", 1)
	f(svc, `node "ingest" has the name of a megawatch service user`)
}

// The node role's template is the node's own subject and inbox; no role
// may subscribe to _INBOX.> or all subjects.
func TestPolicyHasNoSharedInbox(t *testing.T) {
	for role, p := range natsauth.Policy(natsauth.PolicyOptions{}) {
		for _, s := range append(append([]string{}, p.Sub...), p.Pub...) {
			if s == "_INBOX.>" || s == ">" || s == "$JS.API.>" || s == "$JS.>" {
				t.Errorf("role %s may use %q", role, s)
			}
		}
		if len(p.Pub) == 0 && len(p.PubDeny) == 0 {
			t.Errorf("role %s: empty publish permissions allow everything", role)
		}
	}
	if got := natsauth.NodePermissions(); len(got.Pub) != 1 || got.Pub[0] != natsauth.NodeSubjectTemplate || got.Sub[0] != "_INBOX.{{name()}}.>" {
		t.Errorf("node permissions %+v", got)
	}
}

// docs/nats.md lists every permission of every role.
func TestDocsListEveryPermission(t *testing.T) {
	doc, err := os.ReadFile("../../docs/nats.md")
	if err != nil {
		t.Fatal(err)
	}
	for role, p := range natsauth.Policy(natsauth.PolicyOptions{}) {
		for _, s := range append(append(append([]string{}, p.Pub...), p.Sub...), p.PubDeny...) {
			if !bytes.Contains(doc, []byte("`"+s+"`")) {
				t.Errorf("docs/nats.md does not list %s's permission `%s`", role, s)
			}
		}
	}
}

func TestIngestMayPublishItsConflictAlert(t *testing.T) {
	if !slices.Contains(natsauth.IngestPermissions().Pub, ingest.ConflictAlertSubject) {
		t.Fatalf("ingest's permissions do not allow publishing %s", ingest.ConflictAlertSubject)
	}
}
