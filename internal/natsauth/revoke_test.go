package natsauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadRevocations(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, RevokedFile)
	const pub = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	f := func(content, wantErr string, wantN int) {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		revs, err := loadRevocations(p)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%q: err %v, want %q", content, err, wantErr)
			}
			return
		}
		if err != nil || len(revs) != wantN {
			t.Errorf("%q: %d revocations, %v", content, len(revs), err)
		}
	}
	f("", "", 0)
	f(pub+" 1700000000 gpu-1\n\n"+pub+" 1700000001\n", "", 2)
	f("nonsense 1 x\n", ":1: want", 0)
	f(pub+" soon x\n", ":1:", 0)
	if revs, err := loadRevocations(filepath.Join(dir, "missing")); err != nil || revs != nil {
		t.Errorf("missing file: %v %v", revs, err)
	}
}

// FuzzLoadRevocations: keys/revoked.txt is read back on every run.
func FuzzLoadRevocations(f *testing.F) {
	f.Add([]byte("UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4 1700000000 gpu-1\n"))
	f.Add([]byte("x\n\n y 1"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, RevokedFile)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		revs, err := loadRevocations(p)
		if err == nil {
			for _, r := range revs {
				if r.pub == "" {
					t.Error("revocation without a key")
				}
			}
		}
	})
}
