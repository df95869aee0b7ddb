package nodepower

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mockBMC serves DMTF's public-rackmount1 mockup (testdata/redfish) over
// TLS, with faults the tests switch on: a slow answer, 503 with
// Retry-After, resources that vanish (a firmware update changing the
// layout), basic auth.
type mockBMC struct {
	srv *httptest.Server

	mu        sync.Mutex
	res       map[string]map[string]any // path → resource
	delay     chan struct{}             // non-nil: requests wait for it to close
	busy      int                       // next n requests get 503
	retry     string                    // Retry-After of a 503
	user, pwd string
	gets      []string

	conns    atomic.Int64 // connections opened
	inFlight atomic.Int64
	maxConc  atomic.Int64
}

func newMockBMC(t *testing.T) *mockBMC {
	t.Helper()
	b := &mockBMC{res: map[string]map[string]any{}}
	root := filepath.Join("testdata", "redfish", "public-rackmount1")
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		path := "/redfish/v1"
		if rel != "." {
			path += "/" + filepath.ToSlash(rel)
		}
		b.res[path] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are tested
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.StartTLS()
	t.Cleanup(func() {
		b.mu.Lock()
		if b.delay != nil {
			close(b.delay)
			b.delay = nil
		}
		b.mu.Unlock()
		b.srv.Close()
	})
	return b
}

func (b *mockBMC) serve(w http.ResponseWriter, r *http.Request) {
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		m := b.maxConc.Load()
		if n <= m || b.maxConc.CompareAndSwap(m, n) {
			break
		}
	}
	b.mu.Lock()
	b.gets = append(b.gets, r.URL.Path)
	delay, user, pwd := b.delay, b.user, b.pwd
	if b.busy > 0 {
		b.busy--
		retry := b.retry
		b.mu.Unlock()
		if retry != "" {
			w.Header().Set("Retry-After", retry)
		}
		http.Error(w, `{"error":"busy"}`, http.StatusServiceUnavailable)
		return
	}
	res, ok := b.res[strings.TrimSuffix(r.URL.Path, "/")]
	var body []byte
	if ok {
		body, _ = json.Marshal(res)
	}
	b.mu.Unlock()
	if delay != nil {
		select {
		case <-delay:
		case <-r.Context().Done():
			return
		}
	}
	if user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pwd {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// set changes one property of a resource (path "/redfish/v1/..."; keys a
// dotted path, e.g. "PowerWatts.Reading").
func (b *mockBMC) set(path, key string, v any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.res[path]
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	m[parts[len(parts)-1]] = v
}

// remove deletes resources and the chassis' links to them.
func (b *mockBMC) remove(paths ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range paths {
		delete(b.res, p)
		ch := b.res["/redfish/v1/Chassis/1U"]
		for k, v := range ch {
			if l, ok := v.(map[string]any); ok && l["@odata.id"] == p {
				delete(ch, k)
			}
		}
	}
}

func (b *mockBMC) getsSince(i int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.gets[i:]...)
}

func (b *mockBMC) nGets() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.gets)
}

// caFile writes the server's certificate as a CA file.
func (b *mockBMC) caFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bmc-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.srv.Certificate().Raw})
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// config is a Redfish config for this BMC, verified with its CA.
func (b *mockBMC) config(t *testing.T) RedfishConfig {
	c := DefaultConfig().Redfish
	c.URL = b.srv.URL
	c.CAFile = b.caFile(t)
	c.MaxBackoff = time.Minute
	return c
}

func (b *mockBMC) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.delay != nil {
		close(b.delay)
		b.delay = nil
	}
}

func (b *mockBMC) hold() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.delay = make(chan struct{})
}

func (b *mockBMC) setBusy(n int, retryAfter string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy, b.retry = n, retryAfter
}
