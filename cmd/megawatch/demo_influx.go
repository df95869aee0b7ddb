package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/megawatch/megawatch/internal/influxconf"
)

// findInfluxd looks for an influxd binary where scripts/install-test-servers.sh
// puts it, then on PATH and in ~/go/bin.
func findInfluxd() (string, bool) {
	var cands []string
	if d := os.Getenv("MEGAWATCH_TOOLS"); d != "" {
		cands = append(cands, filepath.Join(d, "bin", "influxd"))
	}
	home, _ := os.UserHomeDir()
	if home != "" {
		cands = append(cands, filepath.Join(home, ".cache", "megawatch", "tools", "bin", "influxd"))
	}
	if p, err := exec.LookPath("influxd"); err == nil {
		cands = append(cands, p)
	}
	if home != "" {
		cands = append(cands, filepath.Join(home, "go", "bin", "influxd"))
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c, true
		}
	}
	return "", false
}

// localInfluxd is an influxd 1.8 that the demo runs in a temp dir.
type localInfluxd struct {
	URL  string
	Dir  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startInfluxd(ctx context.Context, bin, dir string) (*localInfluxd, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	rpc, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := influxconf.Local(dir, port, rpc)
	cf := filepath.Join(dir, "influxd.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "influxd.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-config", cf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start influxd: %w", err)
	}
	d := &localInfluxd{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(d.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return d, nil
			}
		}
		select {
		case <-d.done:
			return nil, fmt.Errorf("influxd exited at start; see %s", filepath.Join(dir, "influxd.log"))
		case <-ctx.Done():
			d.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.Stop()
			return nil, errors.New("influxd not ready after 30s")
		}
	}
}

// CreateDB runs CREATE DATABASE.
func (d *localInfluxd) CreateDB(db string) error { return influxCreateDB(d.URL, db) }

func influxCreateDB(base, db string) error {
	resp, err := http.PostForm(strings.TrimRight(base, "/")+"/query", url.Values{"q": {`CREATE DATABASE "` + db + `"`}})
	if err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("create database %s: status %d", db, resp.StatusCode)
	}
	return nil
}

// Stop terminates influxd and waits for it.
func (d *localInfluxd) Stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
