// Package natstest runs in-process nats-servers for tests.
package natstest

import (
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is an in-process nats-server that can be stopped and restarted on
// the same port and store.
type Server struct {
	*server.Server
	opts *server.Options
	t    testing.TB
}

// RunServer starts an in-process server: random port, JetStream, store in
// t.TempDir(). It is shut down at cleanup.
func RunServer(t testing.TB) *Server {
	t.Helper()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 8 << 20,
	}
	s := &Server{opts: opts, t: t}
	s.start()
	// Pin the chosen port so that Restart comes back on the same URL.
	s.opts.Port = s.Server.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() {
		if s.Server != nil {
			s.Server.Shutdown()
			s.Server.WaitForShutdown()
		}
	})
	return s
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := server.NewServer(s.opts)
	if err != nil {
		s.t.Fatalf("nats-server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		s.t.Fatalf("nats-server not ready after 10s")
	}
	s.Server = srv
}

// URL is the client URL (stable across Restart).
func (s *Server) URL() string { return s.Server.ClientURL() }

// Stop shuts the server down; its store stays for Restart.
func (s *Server) Stop() {
	s.Server.Shutdown()
	s.Server.WaitForShutdown()
}

// Restart starts a new server on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}

// Connect returns a client connection closed at cleanup.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("nats connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream returns a JetStream context on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}
