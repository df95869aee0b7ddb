package natsx_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEnsureStreamsIsIdempotent(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s.URL())
	js := natstest.JetStream(t, nc)
	ctx := context.Background()
	cfg := natsx.DefaultStreamsConfig()
	for range 2 {
		if err := natsx.EnsureStreams(ctx, js, cfg); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, telemetry.StreamPower)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Duplicates != 2*time.Minute || info.Config.MaxAge != 24*time.Hour || info.Config.Subjects[0] != telemetry.PowerWildcard {
		t.Fatalf("power stream config %+v", info.Config)
	}
	// A changed retention is applied on the next start.
	cfg.MaxAge = 2 * time.Hour
	if err := natsx.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	info, _ = st.Info(ctx)
	if info.Config.MaxAge != 2*time.Hour {
		t.Fatalf("max age not updated: %v", info.Config.MaxAge)
	}
	// The rollup stream captures alert events too; dead letters are kept.
	for subj, stream := range map[string]string{
		"megawatch.v1.rollup.hall.dc1.h1":       telemetry.StreamRollup,
		"megawatch.v1.alert.page.hall_capacity": telemetry.StreamRollup,
		"megawatch.v1.deadletter.decode":        telemetry.StreamDeadLetter,
	} {
		ack, err := js.Publish(ctx, subj, []byte("x"))
		if err != nil || ack.Stream != stream {
			t.Fatalf("publish %s: %v (stream %v), want stream %s", subj, err, ack, stream)
		}
	}
}

func TestUserPasswordFromEnvAndRedaction(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, Username: "node", Password: "s3cret-pw", NoLog: true, NoSigs: true}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Setenv("MW_TEST_NATS_PW", "s3cret-pw")
	cfg := natsx.DefaultConfig()
	cfg.Servers = []string{srv.ClientURL()}
	cfg.User = "node"
	cfg.PasswordEnv = "MW_TEST_NATS_PW"
	if err := cfg.Validate("nats"); err != nil {
		t.Fatal(err)
	}
	nc, err := natsx.Connect(cfg, nil, nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	// The password file form works the same way.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.PasswordEnv, cfg.PasswordFile = "", pwFile
	nc, err = natsx.Connect(cfg, nil, nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	// A wrong password fails, and the error never contains a secret from a URL.
	cfg.PasswordFile = ""
	cfg.User = ""
	cfg.Servers = []string{strings.Replace(srv.ClientURL(), "nats://", "nats://node:wrong-pw@", 1)}
	_, err = natsx.Connect(cfg, nil, nats.RetryOnFailedConnect(false))
	if err == nil {
		t.Fatal("wrong password accepted")
	}
	if strings.Contains(err.Error(), "wrong-pw") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := natsx.Config{CredsFile: "/nonexistent/creds", User: "u", PasswordEnv: "A", PasswordFile: "B", TLSCertFile: "x", ReconnectWaitMax: -1}
	err := c.Validate("nats")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		"nats.servers: at least one server URL is required",
		"nats.creds_file: set only one of creds_file, nkey_seed_file and user",
		"nats.password_env: set only one of password_env and password_file",
		"nats.tls_cert_file: tls_cert_file and tls_key_file go together",
		"nats.reconnect_wait_max: must not be negative",
		"nats.creds_file: stat /nonexistent/creds",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	s := natsx.StreamsConfig{Replicas: 7, DuplicateWindow: time.Hour, MaxAge: time.Minute}
	err = s.Validate("streams")
	for _, want := range []string{"streams.replicas: must be 1..5", "streams.duplicate_window", "streams.dead_letter_max_age"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestNatstestRestartKeepsStore(t *testing.T) {
	s := natstest.RunServer(t)
	url := s.URL()
	nc := natstest.Connect(t, url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "megawatch.v1.power.a.b.c.d.e", []byte("1")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Restart()
	if s.URL() != url {
		t.Fatalf("url changed: %s → %s", url, s.URL())
	}
	for {
		st, err := js.Stream(ctx, telemetry.StreamPower)
		if err == nil {
			info, err := st.Info(ctx)
			if err == nil && info.State.Msgs == 1 {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("stream not back with its message: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countingJS counts stream create/update requests.
type countingJS struct {
	jetstream.JetStream
	updates int
}

func (c *countingJS) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	c.updates++
	return c.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// TestEnsureStreamLeavesMatchingStreamAlone: a stream that already has
// megawatch's settings gets no update request (every process ensures its
// streams at start; an update racing a consumer creation is a data race in
// nats-server's file store), a changed setting does.
func TestEnsureStreamLeavesMatchingStreamAlone(t *testing.T) {
	s := natstest.RunServer(t)
	js := &countingJS{JetStream: natstest.JetStream(t, natstest.Connect(t, s.URL()))}
	ctx := context.Background()
	cfg := natsx.DefaultStreamsConfig()
	if err := natsx.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if js.updates != 4 {
		t.Fatalf("%d create requests for 4 new streams", js.updates)
	}
	js.updates = 0
	if err := natsx.EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if js.updates != 0 {
		t.Fatalf("%d update requests for 4 streams with the same settings", js.updates)
	}
	cfg.MaxAge = time.Hour
	if _, err := natsx.EnsureStream(ctx, js, cfg.PowerStream()); err != nil {
		t.Fatal(err)
	}
	if js.updates != 1 {
		t.Fatalf("%d update requests for a changed max_age, want 1", js.updates)
	}
}
