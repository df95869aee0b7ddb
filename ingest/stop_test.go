package ingest

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestGracefulStop: an ingest process holding a backlog (prefetched and
// batched messages, writes slowed to 300 ms) gets SIGTERM. It writes or
// NAKs what it holds and exits; a new process then writes every held
// message well before the 30 s ack wait would have released them.
func TestGracefulStop(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	ns, js := natsProcess(t)
	s := newStream(40, 60)
	s.publish(t, js, 0, nil)
	slow := httptest.NewServer(delayProxy(influx.URL, 300*time.Millisecond, nil))
	defer slow.Close()
	child := exec.Command(os.Args[0], "-test.run=^TestIngestStopChildProcess$")
	child.Env = append(os.Environ(), "MW_INGEST_STOP_CHILD_NATS="+ns.URL, "MW_INGEST_STOP_CHILD_INFLUX="+slow.URL)
	var out strings.Builder
	child.Stdout, child.Stderr = &out, &out
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "some points", func() bool { return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) > 0 })
	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("child after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		_ = child.Process.Kill()
		t.Fatalf("child did not exit within 20 s of SIGTERM\n%s", out.String())
	}
	if n := influx.Count(t, "mw", `SELECT count(gpus) FROM node`); n >= int64(s.nodes*s.windows) {
		t.Fatalf("all %d points written before the stop; the test needs a bigger stream\n%s", n, out.String())
	}
	if !strings.Contains(out.String(), "stopped") {
		t.Errorf("child did not stop cleanly:\n%s", out.String())
	}
	cfg := testConfig(influx.URL, "mw")
	cfg.AckWait = 30 * time.Second
	startIngest(t, cfg, ns.URL, nil)
	// Held messages that waited for ack expiry would take 30 s; 12 s is
	// ample on a loaded machine for the ~2,400 reports.
	s.exact(t, influx, "mw", 12*time.Second)
}

// TestIngestStopChildProcess is the ingest process TestGracefulStop stops.
func TestIngestStopChildProcess(t *testing.T) {
	natsURL := os.Getenv("MW_INGEST_STOP_CHILD_NATS")
	if natsURL == "" {
		t.Skip("helper process of TestGracefulStop")
	}
	cfg := testConfig(os.Getenv("MW_INGEST_STOP_CHILD_INFLUX"), "mw")
	cfg.BatchLines = 500
	cfg.AckWait = 30 * time.Second
	cfg.StopTimeout = 2 * time.Second
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	in, err := New(cfg, nc, testLogger(os.Stderr), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := in.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDeadLetterStoredOnce: a poison message dead-lettered, then
// redelivered (ingest crashed before its ack) and dead-lettered again, is
// stored once: the dead letter's Msg-Id derives from the original's (or
// from its stream sequence when it has none).
func TestDeadLetterStoredOnce(t *testing.T) {
	natsURL, js := natsInProcess(t)
	publishBytes(t, js, "megawatch.v1.power.dc1.h1.r01.k01.junk", []byte{0xff, 0x01}, "junk:1")
	publishBytes(t, js, "megawatch.v1.power.dc1.h1.r01.k01.noid", []byte{0xff, 0x02}, "")
	cfg := testConfig("http://127.0.0.1:1", "mw")
	nc := connect(t, natsURL)
	in, err := New(cfg, nc, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, "MEGAWATCH_POWER", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		for range 3 { // first delivery and two redeliveries
			if err := in.deadLetter(ctx, m, ReasonDecode, errors.New("bad")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := deadLetters(t, js); len(got) != 2 {
		t.Errorf("dead letters %v, want one per poison message", got)
	}
}
