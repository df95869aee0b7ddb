// Package testenv finds and starts the real servers that integration tests
// run against: nats-server, influxd and Alertmanager as processes.
//
// A missing binary skips the test locally, but fails it under CI=true with
// the command that installs it: integration tests never skip silently in CI.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// InstallHint is how to get every test server.
const InstallHint = "run scripts/install-test-servers.sh (installs nats-server 2.15.2 and influxd 1.8.10 with go install, prometheus-alertmanager and chromium with apt-get)"

// ToolsDir is where scripts/install-test-servers.sh puts the Go-built servers.
func ToolsDir() string {
	if d := os.Getenv("MEGAWATCH_TOOLS"); d != "" {
		return filepath.Join(d, "bin")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "megawatch", "tools", "bin")
}

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// LookPath finds a server binary in ToolsDir, then PATH, then ~/go/bin.
func LookPath(name string) (string, error) {
	cands := []string{filepath.Join(ToolsDir(), name)}
	if p, err := exec.LookPath(name); err == nil {
		cands = append(cands, p)
	}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, "go", "bin", name))
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s, PATH or ~/go/bin", name, ToolsDir())
}

// Binary returns the path of a server binary, or skips the test (fails it
// under CI=true) when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p, err := LookPath(name)
	if err == nil {
		return p
	}
	if InCI() {
		t.Fatalf("%v: %s", err, InstallHint)
	}
	t.Skipf("%v: %s", err, InstallHint)
	return ""
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Short skips an integration test under -short (never under CI=true).
func Short(t testing.TB) {
	t.Helper()
	if testing.Short() && !InCI() {
		t.Skip("integration test skipped with -short")
	}
}
