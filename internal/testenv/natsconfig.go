package testenv

import (
	"fmt"
	"testing"
)

// StartNATSConfig runs `nats-server -c conf` with nothing else on the
// command line, so the server runs exactly the config it is given (for a
// config written by `megawatch nats-accounts`); port is the client port
// that config listens on, on 127.0.0.1.
func StartNATSConfig(t testing.TB, conf string, port int) *NATSServer {
	t.Helper()
	Short(t)
	s := &NATSServer{Proc: StartProc(t, "nats-server", Binary(t, "nats-server"), "-c", conf),
		URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Port: port}
	s.WaitReady(t)
	return s
}
