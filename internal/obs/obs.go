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
	"sync/atomic"
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

// Heartbeat is the liveness of a main loop: the loop calls Beat every
// iteration, and Check fails once the last beat is older than maxAge (the
// loop is stuck: a deadlock, a hung driver call). /healthz serves Check,
// so a Kubernetes liveness probe or a watchdog restarts the process.
type Heartbeat struct {
	last   atomic.Int64 // unix nanoseconds
	maxAge time.Duration
	now    func() time.Time
}

// NewHeartbeat returns a heartbeat that has just beaten.
func NewHeartbeat(maxAge time.Duration) *Heartbeat {
	h := &Heartbeat{maxAge: maxAge, now: time.Now}
	h.Beat()
	return h
}

// Beat records that the loop is alive.
func (h *Heartbeat) Beat() { h.last.Store(h.now().UnixNano()) }

// Check returns nil while the last beat is recent, else how long ago it was.
func (h *Heartbeat) Check() error {
	if h == nil {
		return nil
	}
	if age := h.now().Sub(time.Unix(0, h.last.Load())); age > h.maxAge {
		return fmt.Errorf("main loop stalled: last iteration %s ago (limit %s)", age.Round(time.Millisecond), h.maxAge)
	}
	return nil
}

// Options configure Handler.
type Options struct {
	Registry *prometheus.Registry
	Ready    ReadyFunc     // /readyz: 503 with the reason when it fails
	Detail   func() string // printed by /readyz after "ready" (e.g. which notifiers page)
	Live     *Heartbeat    // /healthz: 503 once the main loop stalled; nil: always ok
}

// Mux returns the handler for /metrics, /healthz and /readyz; callers may
// add routes to it.
func Mux(reg *prometheus.Registry, ready ReadyFunc) *http.ServeMux {
	return Handler(Options{Registry: reg, Ready: ready})
}

// MuxDetail is Mux whose /readyz also prints detail() after "ready".
func MuxDetail(reg *prometheus.Registry, ready ReadyFunc, detail func() string) *http.ServeMux {
	return Handler(Options{Registry: reg, Ready: ready, Detail: detail})
}

// Handler returns the mux for /metrics, /healthz and /readyz.
func Handler(o Options) *http.ServeMux {
	reg, ready, detail := o.Registry, o.Ready, o.Detail
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := o.Live.Check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
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
