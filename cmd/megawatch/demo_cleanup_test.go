package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
)

// Interrupted (Ctrl-C is a cancelled context) the demo removes its data
// directory; with --keep-data it keeps it and says where.
func TestDemoDataDirRemovedOnInterruptUnlessKept(t *testing.T) {
	testenv.Short(t)
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
			args := []string{"--quick", "--scale", "0.1", "--collectors", "1", "--no-influx", "--http-addr", addr, "--log-level", "error"}
			if keep {
				args = append(args, "--keep-data")
			}
			var out, errOut lockedBuffer
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- runDemo(ctx, args, &out, &errOut) }()
			if err := testenv.WaitHTTP("http://"+addr+"/healthz", http.StatusOK, 60*time.Second); err != nil {
				cancel()
				t.Fatalf("demo not up: %v\n%s", err, out.String())
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("demo: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("demo did not stop after the interrupt")
			}
			m := regexp.MustCompile(`JetStream in (\S+)/nats`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("no data directory in the output:\n%s", out.String())
			}
			_, err := os.Stat(m[1])
			switch {
			case keep && err != nil:
				t.Errorf("--keep-data: %s is gone: %v", m[1], err)
			case !keep && !os.IsNotExist(err):
				t.Errorf("%s left behind after the interrupt (stat: %v)", m[1], err)
			}
			if keep {
				_ = os.RemoveAll(m[1])
			}
		})
	}
}
