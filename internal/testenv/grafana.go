package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// GrafanaTarball is where the Grafana 9.3.2 server build lives, relative
// to the repository root (the shared tools next to the clone).
const GrafanaTarball = "../shared/tools/grafana/grafana-9.3.2-linux-amd64.tar.gz"

// Grafana is a real grafana-server (9.3.2, backend and HTTP API) on
// 127.0.0.1 with admin/admin.
type Grafana struct {
	*Proc
	URL string // http://127.0.0.1:<port>
}

// RepoRoot is the directory holding go.mod, found by walking up from the
// working directory (a test's package directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// StartGrafana unpacks ../shared/tools/grafana's server into a temp dir
// and runs it with the given provisioning directory (datasources/,
// dashboards/). The process inherits the test's environment, so
// provisioning files may use $VAR (set them with t.Setenv first). A
// missing tarball skips the test, and fails it under CI=true.
func StartGrafana(t testing.TB, provisioning string) *Grafana {
	t.Helper()
	Short(t)
	tarball := filepath.Join(RepoRoot(t), GrafanaTarball)
	if _, err := os.Stat(tarball); err != nil {
		msg := fmt.Sprintf("grafana: %v (the Grafana 9.3.2 server build belongs at %s, next to the clone)", err, GrafanaTarball)
		if InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	if out, err := exec.Command("tar", "xzf", tarball, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", tarball, err, out)
	}
	home := filepath.Join(dir, "grafana-9.3.2")
	port, haPort := FreePort(t), FreePort(t)
	ini := fmt.Sprintf(`[server]
http_addr = 127.0.0.1
http_port = %d
[paths]
data = %s
logs = %s
plugins = %s
provisioning = %s
[analytics]
reporting_enabled = false
check_for_updates = false
[unified_alerting]
ha_listen_address = 127.0.0.1:%d
[security]
admin_user = admin
admin_password = admin
[log]
mode = console
level = warn
`, port, filepath.Join(dir, "data"), filepath.Join(dir, "logs"), filepath.Join(dir, "plugins"), provisioning, haPort)
	cf := filepath.Join(dir, "grafana.ini")
	writeFile(t, cf, ini)
	g := &Grafana{
		Proc: StartProc(t, "grafana", filepath.Join(home, "bin", "grafana-server"), "--homepath", home, "--config", cf),
		URL:  fmt.Sprintf("http://127.0.0.1:%d", port),
	}
	g.WaitHTTP(g.URL+"/api/health", http.StatusOK, 120*time.Second)
	return g
}

// Request sends an authenticated (admin) request with a JSON body ("" for none).
func (g *Grafana) Request(method, path, body string) (*http.Response, error) {
	req, err := http.NewRequest(method, g.URL+path, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth("admin", "admin")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}
