package collector

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/testenv"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// With NATS down, the collector starts and samples (its heartbeat beats),
// but neither its log nor /readyz calls it ready, and the log says why.
func TestCollectorNotReadyWhileNATSIsDown(t *testing.T) {
	cfg := fastConfig()
	dev, err := sim.New(cfg.Sim, testLoc, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuf
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	nc := collectorConn(t, fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t)))
	c, err := New(cfg, dev, testLoc, nc, logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for !c.emitted.Load() {
		if time.Now().After(deadline) {
			t.Fatal("no window summarised")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "nats not connected") {
		t.Errorf("Ready() = %v with NATS down", err)
	}
	if err := c.Live().Check(); err != nil {
		t.Errorf("Live() = %v while sampling", err)
	}
	cancel()
	<-done
	out := logs.String()
	if strings.Contains(out, "ready") && !strings.Contains(out, "not ready") {
		t.Errorf("log calls the collector ready with NATS down:\n%s", out)
	}
	if !strings.Contains(out, "collector started") || !strings.Contains(out, "NATS not connected") {
		t.Errorf("log lacks the start line and the NATS warning:\n%s", out)
	}
}
