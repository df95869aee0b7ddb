package testenv

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestInfluxdWriteQueryRestart(t *testing.T) {
	d := StartInfluxd(t)
	d.CreateDB(t, "mw")
	write := func(lines string) {
		t.Helper()
		resp, err := http.Post(d.URL+"/write?db=mw&precision=ns", "text/plain", strings.NewReader(lines))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write status %d", resp.StatusCode)
		}
	}
	write("node,site=dc1 power_w=1200 1700000000000000000\nnode,site=dc1 power_w=1300 1700000001000000000\n")
	if n := d.Count(t, "mw", "SELECT count(power_w) FROM node"); n != 2 {
		t.Fatalf("count = %d, want 2", n)
	}
	if n, err := d.PointsWrittenOK(); err != nil || n != 2 {
		t.Fatalf("pointsWrittenOK = %d, %v; want 2", n, err)
	}
	d.Kill()
	d.Restart(t)
	if n := d.Count(t, "mw", "SELECT count(power_w) FROM node"); n != 2 {
		t.Fatalf("after restart count = %d, want 2", n)
	}
	if _, err := d.QueryErr("mw", "SELECT nonsense FROM"); err == nil {
		t.Fatal("bad query accepted")
	}
}

func TestNATSServerKillRestart(t *testing.T) {
	s := StartNATSServer(t)
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s.Kill()
	if s.Running() {
		t.Fatal("still running after Kill")
	}
	s.Restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("client did not reconnect")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAlertmanagerReady(t *testing.T) {
	am := StartAlertmanager(t, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
	resp, err := http.Get(am.URL + "/api/v2/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
