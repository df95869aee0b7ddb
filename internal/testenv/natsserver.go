package testenv

import (
	"fmt"
	"net"
	"testing"
	"time"
)

// NATSServer is a nats-server process with JetStream on a fixed port and
// store directory, so a test can kill it and restart it on the same store.
type NATSServer struct {
	*Proc
	URL      string
	Port     int
	StoreDir string
}

// StartNATSServer runs `nats-server -a 127.0.0.1 -p <port> -js -sd <dir>`.
// Extra args (e.g. "-c", file) are appended.
func StartNATSServer(t testing.TB, extra ...string) *NATSServer {
	t.Helper()
	Short(t)
	bin := Binary(t, "nats-server")
	port := FreePort(t)
	dir := t.TempDir()
	args := append([]string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", dir}, extra...)
	s := &NATSServer{Proc: StartProc(t, "nats-server", bin, args...), URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port, StoreDir: dir}
	s.WaitReady(t)
	return s
}

// Restart starts the killed server again on the same port and store.
func (s *NATSServer) Restart(t testing.TB) {
	t.Helper()
	if err := s.Start(); err != nil {
		t.Fatalf("restart nats-server: %v", err)
	}
	s.WaitReady(t)
}

// WaitReady waits until the server accepts TCP connections.
func (s *NATSServer) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nats-server on port %d not ready:\n%s", s.Port, s.Output())
}
