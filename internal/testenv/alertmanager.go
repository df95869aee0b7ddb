package testenv

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// Alertmanager is a real prometheus-alertmanager process on 127.0.0.1.
type Alertmanager struct {
	*Proc
	URL string // http://127.0.0.1:<port>
}

// StartAlertmanager runs prometheus-alertmanager with the given YAML config
// (typically routing to a webhook receiver served by the test), cluster off.
func StartAlertmanager(t testing.TB, configYAML string) *Alertmanager {
	t.Helper()
	Short(t)
	bin := Binary(t, "prometheus-alertmanager")
	dir := t.TempDir()
	cf := filepath.Join(dir, "alertmanager.yml")
	writeFile(t, cf, configYAML)
	port := FreePort(t)
	am := &Alertmanager{
		Proc: StartProc(t, "alertmanager", bin,
			"--config.file="+cf, "--storage.path="+filepath.Join(dir, "data"),
			fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--cluster.listen-address=",
			"--log.level=warn"),
		URL: fmt.Sprintf("http://127.0.0.1:%d", port),
	}
	am.WaitHTTP(am.URL+"/-/ready", http.StatusOK, 30*time.Second)
	return am
}
