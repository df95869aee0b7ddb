// Package bmctest is a Redfish BMC for tests: DMTF's public-rackmount1
// mockup (testdata/redfish, BSD-3, see its LICENSE) served over TLS by
// httptest, with the faults real BMCs have: a slow answer, 503 with
// Retry-After, resources that vanish (a firmware update changing the
// layout), basic auth.
package bmctest

import (
	"embed"
	"encoding/json"
	"encoding/pem"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

//go:embed testdata/redfish
var mockup embed.FS

const mockupRoot = "testdata/redfish/public-rackmount1"

// Chassis paths of the mockup.
const (
	Chassis            = "/redfish/v1/Chassis/1U"
	EnvironmentMetrics = Chassis + "/EnvironmentMetrics"
	Sensors            = Chassis + "/Sensors"
	TotalPower         = Sensors + "/TotalPower"
	TotalEnergy        = Sensors + "/TotalEnergy"
	Power              = Chassis + "/Power"
)

// Mockup returns the mockup's resources, path → JSON body.
func Mockup() map[string][]byte {
	out := map[string][]byte{}
	_ = fs.WalkDir(mockup, mockupRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := mockup.ReadFile(p)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(path.Dir(p), mockupRoot)
		out["/redfish/v1"+rel] = b
		return nil
	})
	return out
}

// BMC is a running mock BMC.
type BMC struct {
	srv *httptest.Server

	mu        sync.Mutex
	res       map[string]map[string]any
	delay     chan struct{}
	busy      int
	retry     string
	user, pwd string
	gets      []string

	conns    atomic.Int64
	inFlight atomic.Int64
	maxConc  atomic.Int64
}

// New starts a BMC serving the mockup; it stops at the end of the test.
func New(tb testing.TB) *BMC {
	tb.Helper()
	b := &BMC{res: map[string]map[string]any{}}
	for p, raw := range Mockup() {
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			tb.Fatalf("mockup %s: %v", p, err)
		}
		b.res[p] = v
	}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(b.serve))
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are tested
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.StartTLS()
	tb.Cleanup(func() {
		b.Release()
		b.srv.Close()
	})
	return b
}

// URL is the BMC's https://127.0.0.1:port.
func (b *BMC) URL() string { return b.srv.URL }

// CAFile writes the BMC's certificate as a CA file and returns its path.
func (b *BMC) CAFile(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "bmc-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.srv.Certificate().Raw})
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func (b *BMC) serve(w http.ResponseWriter, r *http.Request) {
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
	_, _ = w.Write(body)
}

// Set changes one property of a resource; key is a dotted path
// ("PowerWatts.Reading").
func (b *BMC) Set(resource, key string, v any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.res[resource]
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	m[parts[len(parts)-1]] = v
}

// SetPowerW sets the chassis power in every place the mockup has it
// (EnvironmentMetrics, Sensors/TotalPower, the legacy Power resource) that
// is still there.
func (b *BMC) SetPowerW(w float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := b.res[EnvironmentMetrics]; ok {
		m["PowerWatts"].(map[string]any)["Reading"] = w
	}
	if m, ok := b.res[TotalPower]; ok {
		m["Reading"] = w
	}
	if m, ok := b.res[Power]; ok {
		m["PowerControl"].([]any)[0].(map[string]any)["PowerConsumedWatts"] = w
	}
}

// Remove deletes resources and the chassis' links to them (a BMC without
// them).
func (b *BMC) Remove(paths ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range paths {
		delete(b.res, p)
		ch := b.res[Chassis]
		for k, v := range ch {
			if l, ok := v.(map[string]any); ok && l["@odata.id"] == p {
				delete(ch, k)
			}
		}
	}
}

// Delete deletes resources but keeps the links (the BMC answers 404).
func (b *BMC) Delete(paths ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range paths {
		delete(b.res, p)
	}
}

// Put adds or replaces a resource (a JSON object).
func (b *BMC) Put(resource, body string) {
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		panic("bmctest.Put: " + err.Error())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.res[resource] = v
}

// SetAuth requires basic auth ("" user: none).
func (b *BMC) SetAuth(user, password string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.user, b.pwd = user, password
}

// Hold makes requests wait until Release.
func (b *BMC) Hold() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.delay == nil {
		b.delay = make(chan struct{})
	}
}

// Release lets held requests answer.
func (b *BMC) Release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.delay != nil {
		close(b.delay)
		b.delay = nil
	}
}

// SetBusy answers the next n requests with 503 and Retry-After retryAfter
// ("" = none).
func (b *BMC) SetBusy(n int, retryAfter string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.busy, b.retry = n, retryAfter
}

// Gets returns the paths requested since the i-th request.
func (b *BMC) Gets(i int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.gets[min(i, len(b.gets)):]...)
}

// NGets is the number of requests so far.
func (b *BMC) NGets() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.gets)
}

// Conns is the number of connections clients opened.
func (b *BMC) Conns() int64 { return b.conns.Load() }

// MaxConcurrent is the most requests that were in flight at once.
func (b *BMC) MaxConcurrent() int64 { return b.maxConc.Load() }
