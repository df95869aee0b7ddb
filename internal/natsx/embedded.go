package natsx

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RunEmbedded starts an in-process nats-server with JetStream storing in dir,
// on 127.0.0.1:port (-1 picks a free port). The demo uses it; tests use natstest.
func RunEmbedded(dir string, port int) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "megawatch-embedded",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats-server: not ready after 10s")
	}
	return s, nil
}
