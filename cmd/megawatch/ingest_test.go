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
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// TestLoadgenIngestFile: loadgen publishes simulated reports; the ingest
// subcommand writes them to a line-protocol file target and serves /readyz.
func TestLoadgenIngestFile(t *testing.T) {
	srv := natstest.RunServer(t)
	var out bytes.Buffer
	// 40 nodes: the 32 of the embedded topology plus 8 generated lg-… nodes.
	if err := runLoadgen(context.Background(), []string{"--nats", srv.URL(), "--nodes", "40", "--rate", "max", "--count", "3"}, &out, &out); err != nil {
		t.Fatalf("loadgen: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "published 120 reports of 40 nodes") {
		t.Errorf("loadgen printed %q", out.String())
	}
	dir := t.TempDir()
	lp := filepath.Join(dir, "out.lp")
	port := testenv.FreePort(t)
	cfg := fmt.Sprintf(`nats: {servers: [%q]}
targets: [{name: file, file: %q}]
metrics_addr: 127.0.0.1:%d
batch_wait: 100ms
`, srv.URL(), lp, port)
	cf := filepath.Join(dir, "ingest.yaml")
	if err := os.WriteFile(cf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- runIngest(ctx, []string{"--config", cf, "--log-level", "warn"}, &logs, &logs) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(lp)
		nodes, gpus := strings.Count("\n"+string(b), "\nnode,"), strings.Count("\n"+string(b), "\ngpu,")
		if nodes == 120 && gpus == 960 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("file has %d node and %d gpu lines after 30s, want 120 and 960", nodes, gpus)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("readyz: %v %v", err, resp)
	}
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatal(err)
	}
	var m bytes.Buffer
	_, _ = m.ReadFrom(resp.Body)
	resp.Body.Close()
	if !strings.Contains(m.String(), `megawatch_ingest_messages_total{stream="`+telemetry.StreamPower+`"} 120`) {
		t.Errorf("metrics lack 120 consumed messages:\n%s", m.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ingest: %v", err)
	}
}
