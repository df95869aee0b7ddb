package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/megawatch/megawatch/internal/natsauth"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// runBounded runs a client command and fails the test if it does not
// return at all (the bug: tap waited forever, silently).
func runBounded(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute):
		t.Fatal("the command did not return")
		return nil
	}
}

// tap and loadgen say so when NATS is unreachable, instead of hanging.
func TestClientToolsFailWhenNATSUnreachable(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", testenv.FreePort(t)) // nothing listens
	var out, errb bytes.Buffer
	err := runBounded(t, func() error {
		return runTap(context.Background(), []string{"--nats", url, "--connect-timeout", "1s"}, &out, &errb)
	})
	if err == nil || !strings.Contains(err.Error(), "NATS not reachable within 1s") {
		t.Errorf("tap: %v", err)
	}
	err = runBounded(t, func() error {
		return runLoadgen(context.Background(), []string{"--nats", url, "--connect-timeout", "1s", "--rate", "max", "--count", "1"}, &out, &errb)
	})
	if err == nil || !strings.Contains(err.Error(), "NATS not reachable") {
		t.Errorf("loadgen: %v", err)
	}
}

// tap and loadgen run against the secured deployment with the creds and
// CA that `megawatch nats-accounts --loadgen-user` wrote; tap with a node's
// creds is refused at once, with the reason.
func TestClientToolsWithGeneratedCreds(t *testing.T) {
	d := newNATSDeployment(t, "--loadgen-user")
	ca := filepath.Join(d.dir, natsauth.TLSSubdir, natsauth.CAFile)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js, err := jetstream.New(d.connect(t, d.serviceCreds(natsauth.RoleIngest)))
	if err != nil {
		t.Fatal(err)
	}
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil { // ingest's job
		t.Fatal(err)
	}

	var tapOut, tapErr bytes.Buffer
	tapDone := make(chan error, 1)
	go func() {
		tapDone <- runTap(ctx, []string{"--nats", d.srv.URL, "--creds", d.serviceCreds(natsauth.RoleTap), "--tls-ca", ca,
			"--json", "--count", "3"}, &tapOut, &tapErr)
	}()
	var tapRunErr error
	for tapped := false; !tapped; {
		var out bytes.Buffer
		args := []string{"--nats", d.srv.URL, "--creds", d.serviceCreds(natsauth.RoleLoadgen), "--tls-ca", ca,
			"--ensure-streams=false", "--nodes", "3", "--rate", "max", "--count", "1"}
		if err := runLoadgen(ctx, args, &out, &out); err != nil {
			t.Fatalf("loadgen %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
		select {
		case tapRunErr = <-tapDone:
			tapped = true
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("tap got no 3 reports")
		}
	}
	if tapRunErr != nil || strings.Count(tapOut.String(), `"type":"node_report"`) != 3 {
		t.Errorf("tap: %v\n%s%s", tapRunErr, tapOut.String(), tapErr.String())
	}

	// A node's creds may not read the power subjects: tap says so.
	node := d.nodeCreds("gpu-h1-r01-rk01-n01")
	err = runBounded(t, func() error {
		return runTap(ctx, []string{"--nats", d.srv.URL, "--creds", node, "--tls-ca", ca, telemetry.PowerWildcard}, &tapOut, &tapErr)
	})
	if err == nil || !strings.Contains(err.Error(), "Permissions Violation for Subscription") {
		t.Errorf("tap with a node's creds: %v", err)
	}
	// Without the CA the server certificate is not trusted: a clear error.
	err = runBounded(t, func() error {
		return runTap(ctx, []string{"--nats", d.srv.URL, "--creds", d.serviceCreds(natsauth.RoleTap), "--connect-timeout", "2s"}, &tapOut, &tapErr)
	})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("tap without the CA: %v", err)
	}
}
