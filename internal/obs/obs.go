// Package obs serves /metrics, /healthz and /readyz for every long-running
// subcommand.
package obs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// ReadyFunc returns nil when the process is ready, else why not.
type ReadyFunc func() error

// Mux returns the handler for /metrics, /healthz and /readyz; callers may
// add routes to it.
func Mux(reg *prometheus.Registry, ready ReadyFunc) *http.ServeMux { return MuxDetail(reg, ready, nil) }

// MuxDetail is Mux whose /readyz also prints detail() (e.g. which
// notifiers page) after "ready".
func MuxDetail(reg *prometheus.Registry, ready ReadyFunc, detail func() string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
		if detail != nil {
			fmt.Fprintln(w, detail())
		}
	})
	return mux
}

// Serve listens on addr ("" disables) and serves h until ctx ends. It
// returns the bound address (useful with ":0") once listening.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server", "addr", addr, "err", err)
		}
	}()
	return ln.Addr().String(), nil
}
