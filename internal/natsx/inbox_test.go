package natsx

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

func writeCreds(t *testing.T, name string) string {
	t.Helper()
	acc, _ := nkeys.CreateAccount()
	u, _ := nkeys.CreateUser()
	pub, _ := u.PublicKey()
	seed, _ := u.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	tok, err := uc.Encode(acc)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := jwt.FormatUserConfig(tok, seed)
	p := filepath.Join(t.TempDir(), "u.creds")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInboxPrefix(t *testing.T) {
	f := func(c Config, want, wantErr string) {
		t.Helper()
		got, err := c.inboxPrefix()
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%+v: err %v, want %q", c, err, wantErr)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("%+v: %q, %v; want %q", c, got, err, want)
		}
	}
	f(Config{}, "", "")                                                // nats.go's default
	f(Config{CredsFile: writeCreds(t, "ingest")}, "_INBOX.ingest", "") // derived from the JWT name
	f(Config{CredsFile: writeCreds(t, "gpu-a"), InboxPrefix: "_INBOX_x"}, "_INBOX_x", "")
	f(Config{CredsFile: writeCreds(t, "a b")}, "", "cannot form an inbox prefix")
	f(Config{CredsFile: writeCreds(t, "")}, "", "has no name")
	f(Config{CredsFile: filepath.Join(t.TempDir(), "missing.creds")}, "", "no such file")
	for _, bad := range []string{"_INBOX.", "_INBOX.>", "a..b", "_INBOX.*"} {
		if err := (Config{Servers: []string{"nats://x"}, InboxPrefix: bad}).Validate("nats"); err == nil || !strings.Contains(err.Error(), "nats.inbox_prefix") {
			t.Errorf("inbox_prefix %q: %v", bad, err)
		}
	}
}

// FuzzCredsUserName: a creds file is outside input; any content gives a
// name or an error, never a panic.
func FuzzCredsUserName(f *testing.F) {
	f.Add([]byte("-----BEGIN NATS USER JWT-----\nabc\n------END NATS USER JWT------\n"))
	f.Add([]byte(""))
	f.Add([]byte("not a creds file"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "f.creds")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if name, err := CredsUserName(p); err == nil && name == "" {
			t.Error("empty name without an error")
		}
	})
}
