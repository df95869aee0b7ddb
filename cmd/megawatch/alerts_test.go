package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/testenv"
)

// `megawatch alerts` with the embedded topology and default rules on an
// in-process NATS: it becomes ready and stops on cancel.
func TestAlertsCommandRuns(t *testing.T) {
	srv := natstest.RunServer(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"alerts", "--nats", srv.URL(), "--http-addr", addr, "--scope", "dc1.h1", "--log-level", "warn"}, &out, &out)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
}

func TestAlertsCommandReportsEveryConfigProblem(t *testing.T) {
	cf := filepath.Join(t.TempDir(), "alerts.yaml")
	os.WriteFile(cf, []byte("window: 0s\nrules:\n  - {name: a, metric: nope, severity: x}\n"), 0o600)
	var out bytes.Buffer
	if code := run(context.Background(), []string{"alerts", "--config", cf}, &out, &out); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"window:", "rules[0] (a): level:", "rules[0] (a): metric:", "rules[0] (a): threshold:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"alerts", "--bogus"}, &out, &out); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
}
