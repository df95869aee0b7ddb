// Package browsertest drives a real headless Chromium (Debian's `chromium`
// package) from Go tests through the DevTools protocol (chromedp), so a
// test can load a page, wait for what it shows and save a screenshot.
//
// A missing browser skips the test locally and fails it under CI=true, like
// testenv.Binary does for the other test servers.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/megawatch/megawatch/internal/testenv"
)

// BrowserName is the binary Open looks for (testenv.LookPath: the tools
// directory, PATH, ~/go/bin); MEGAWATCH_CHROMIUM overrides it with a path.
const BrowserName = "chromium"

// Flags returns the command-line switches the browser runs with: headless,
// no network of its own (no QUIC, no background or component updates, no
// sync), no sandbox (CI containers run as root). A fresh --user-data-dir is
// added per page.
func Flags() []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
	}
}

// Page is one browser tab with a loaded page.
type Page struct {
	t   testing.TB
	ctx context.Context // the tab's chromedp context

	mu     sync.Mutex
	errors []string // uncaught exceptions and console.error calls
}

// Browser returns the path of the Chromium binary, or skips the test
// (fails it under CI=true) when it is missing.
func Browser(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MEGAWATCH_CHROMIUM"); p != "" {
		return p
	}
	return testenv.Binary(t, BrowserName)
}

// Open starts a headless Chromium with a fresh profile, navigates to url
// with a 1440×1000 viewport and waits for the load event. The browser is
// stopped at the test's cleanup.
func Open(t testing.TB, url string) *Page {
	t.Helper()
	bin := Browser(t)
	profile := t.TempDir()
	var out syncBuffer
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 1000),
		chromedp.CombinedOutput(&out),
	}
	for _, f := range Flags() {
		opts = append(opts, chromedp.Flag(strings.TrimPrefix(f, "--"), true))
	}
	opts = append(opts,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	p := &Page{t: t}
	ctx, cancelTab := chromedp.NewContext(actx,
		chromedp.WithLogf(func(string, ...any) {}),
		chromedp.WithListener(p.listen))
	p.ctx = ctx
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	nctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// The first Run starts the browser; it must get the tab's own context,
	// not one with a timeout (the timeout would stop the browser).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1440, 1000)); err != nil {
		t.Fatalf("browsertest: start %s: %v\n%s", bin, err, out.String())
	}
	if err := chromedp.Do(nctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("browsertest: navigate %s: %v\n%s", url, err, out.String())
	}
	return p
}

func (p *Page) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		if d := ev.ExceptionDetails; d != nil {
			msg = "exception: " + d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			parts := make([]string, 0, len(ev.Args))
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, string(a.Value))
				}
			}
			msg = "console.error: " + strings.Join(parts, " ")
		}
	}
	if msg != "" {
		p.mu.Lock()
		p.errors = append(p.errors, msg)
		p.mu.Unlock()
	}
}

// JSErrors returns the uncaught exceptions and console.error messages the
// page produced so far.
func (p *Page) JSErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// Eval evaluates a JavaScript expression in the page and decodes its
// JSON value into T.
func Eval[T any](p *Page, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\u2028", `\u2028`, "\u2029", `\u2029`)
	return `"` + r.Replace(s) + `"`
}

// errNoElement is returned by text when no element matches.
var errNoElement = errors.New("no element matches")

func (p *Page) text(selector string) (string, error) {
	v, err := Eval[*string](p, fmt.Sprintf(`(() => { const e = document.querySelector(%s); return e ? e.textContent : null; })()`, jsString(selector)))
	if err != nil {
		return "", err
	}
	if v == nil {
		return "", fmt.Errorf("%q: %w", selector, errNoElement)
	}
	return strings.TrimSpace(*v), nil
}

// Text returns the trimmed text content of the first element matching the
// CSS selector; it fails the test when none does.
func (p *Page) Text(selector string) string {
	p.t.Helper()
	s, err := p.text(selector)
	if err != nil {
		p.t.Fatalf("browsertest: text %q: %v", selector, err)
	}
	return s
}

// Texts returns the trimmed text content of every element matching the
// CSS selector, in document order.
func (p *Page) Texts(selector string) []string {
	p.t.Helper()
	v, err := Eval[[]string](p, fmt.Sprintf(`Array.from(document.querySelectorAll(%s), e => e.textContent.trim())`, jsString(selector)))
	if err != nil {
		p.t.Fatalf("browsertest: texts %q: %v", selector, err)
	}
	return v
}

// Count returns how many elements match the CSS selector.
func (p *Page) Count(selector string) int {
	p.t.Helper()
	n, err := Eval[int](p, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(selector)))
	if err != nil {
		p.t.Fatalf("browsertest: count %q: %v", selector, err)
	}
	return n
}

// WaitText polls (every 100 ms) the text of the first element matching the
// CSS selector until pred accepts it, and returns that text. It fails the
// test after timeout with the last text seen.
func (p *Page) WaitText(selector string, pred func(string) bool, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	last, lastErr := "", error(nil)
	for {
		s, err := p.text(selector)
		if err == nil && pred(s) {
			return s
		}
		last, lastErr = s, err
		if time.Now().After(deadline) {
			p.t.Fatalf("browsertest: %q not as expected after %v: last text %q, err %v, page errors %q",
				selector, timeout, last, lastErr, p.JSErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// WaitCount polls until at least n elements match the CSS selector and
// returns the count; it fails the test after timeout.
func (p *Page) WaitCount(selector string, n int, timeout time.Duration) int {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c := p.Count(selector)
		if c >= n {
			return c
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("browsertest: %d elements match %q after %v, want at least %d; page errors %q",
				c, selector, timeout, n, p.JSErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Screenshot saves a PNG of the whole page (beyond the viewport) to path,
// creating its directory, and returns path.
func (p *Page) Screenshot(path string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("browsertest: screenshot: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		p.t.Fatalf("browsertest: screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("browsertest: screenshot: %v", err)
	}
	return path
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(b), nil // keep it bounded; the start of the output says most
	}
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
