package browsertest_test

import (
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/browsertest"
	"github.com/megawatch/megawatch/internal/testenv"
)

const testPage = `<!doctype html><html><head><title>t</title></head><body>
<div id="n">0</div><ul><li class="i">a</li><li class="i">b</li></ul>
<script>
let n = 0;
setInterval(() => { n++; document.getElementById("n").textContent = String(n); if (n === 3) { const li = document.createElement("li"); li.className = "i"; li.textContent = "c"; document.querySelector("ul").append(li); } }, 50);
</script></body></html>`

func TestPage(t *testing.T) {
	testenv.Short(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(testPage))
	}))
	defer srv.Close()

	p := browsertest.Open(t, srv.URL)
	// The counter only grows once the page's script runs.
	p.WaitText("#n", func(s string) bool { n, err := strconv.Atoi(s); return err == nil && n >= 5 }, 20*time.Second)
	if n := p.WaitCount(".i", 3, 10*time.Second); n != 3 {
		t.Errorf("count .i = %d, want 3", n)
	}
	if got := strings.Join(p.Texts(".i"), ","); got != "a,b,c" {
		t.Errorf("texts .i = %q", got)
	}
	if n := p.Count(".missing"); n != 0 {
		t.Errorf("count .missing = %d", n)
	}
	path := p.Screenshot(filepath.Join(t.TempDir(), "shot", "page.png"))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if cfg.Width < 800 || cfg.Height < 600 {
		t.Errorf("screenshot %dx%d, want at least 800x600", cfg.Width, cfg.Height)
	}
	if errs := p.JSErrors(); len(errs) > 0 {
		t.Errorf("page errors: %q", errs)
	}
}

func TestJSErrors(t *testing.T) {
	testenv.Short(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<!doctype html><body><p id="x">x</p><script>console.error("boom"); undefinedFn();</script></body>`))
	}))
	defer srv.Close()
	p := browsertest.Open(t, srv.URL)
	p.WaitText("#x", func(s string) bool { return s == "x" }, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(p.JSErrors()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	errs := strings.Join(p.JSErrors(), "\n")
	if !strings.Contains(errs, "boom") || !strings.Contains(errs, "undefinedFn") {
		t.Errorf("JSErrors = %q, want the console.error and the ReferenceError", errs)
	}
}
