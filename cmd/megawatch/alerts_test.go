package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/testenv"
)

// startAlertsCmd runs `megawatch alerts` with args on an in-process NATS
// until the test ends and returns its /readyz body and /metrics text once
// it is ready.
func startAlertsCmd(t *testing.T, args ...string) (ready, metrics string) {
	t.Helper()
	srv := natstest.RunServer(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuf
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"alerts", "--nats", srv.URL(), "--http-addr", addr, "--scope", "dc1.h1", "--log-level", "warn"}, args...), &out, &out)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit %d\n%s", code, out.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body, err := httpGet("http://" + addr + "/readyz")
		if err == nil && code == http.StatusOK {
			ready = body
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v\n%s", err, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, metrics, err := httpGet("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return ready, metrics
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// `megawatch alerts` with the embedded topology and default rules pages
// through the Alertmanager named by $MEGAWATCH_ALERTMANAGER_URLS and the
// PagerDuty key in $PAGERDUTY_ROUTING_KEY (what the Kubernetes files
// inject); /readyz and megawatch_alerts_paging_notifiers say so.
func TestAlertsCommandPagesFromEnv(t *testing.T) {
	t.Setenv("MEGAWATCH_ALERTMANAGER_URLS", "http://127.0.0.1:1,http://127.0.0.1:2")
	t.Setenv("PAGERDUTY_ROUTING_KEY", "k")
	ready, metrics := startAlertsCmd(t)
	for _, want := range []string{"alertmanager:http://127.0.0.1:1", "alertmanager:http://127.0.0.1:2", "pagerduty"} {
		if !strings.Contains(ready, want) {
			t.Errorf("/readyz %q lacks %q", ready, want)
		}
	}
	if !strings.Contains(metrics, "megawatch_alerts_paging_notifiers 3\n") {
		t.Errorf("megawatch_alerts_paging_notifiers is not 3:\n%s", grepLines(metrics, "paging"))
	}
}

// With nothing that pages, `megawatch alerts` refuses to start, naming
// what to set; notifiers.log_only: true lets it run, and says so.
func TestAlertsCommandRefusesToStartWithoutPaging(t *testing.T) {
	t.Setenv("MEGAWATCH_ALERTMANAGER_URLS", "")
	t.Setenv("PAGERDUTY_ROUTING_KEY", "")
	var out bytes.Buffer
	code := run(context.Background(), []string{"alerts", "--nats", "nats://127.0.0.1:1"}, &out, &out)
	if code != 1 || !strings.Contains(out.String(), "no paging notifier") || !strings.Contains(out.String(), "log_only") {
		t.Fatalf("exit %d, want 1 and the no-paging error:\n%s", code, out.String())
	}
	cf := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(cf, []byte("notifiers:\n  log_only: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ready, metrics := startAlertsCmd(t, "--config", cf)
	if !strings.Contains(ready, "paging: NONE") {
		t.Errorf("/readyz %q does not say nothing pages", ready)
	}
	if !strings.Contains(metrics, "megawatch_alerts_paging_notifiers 0\n") {
		t.Errorf("megawatch_alerts_paging_notifiers is not 0:\n%s", grepLines(metrics, "paging"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
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
