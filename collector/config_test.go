package collector

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestExampleConfigEqualsDefaults(t *testing.T) {
	got, err := LoadConfig(filepath.Join("..", "configs", "collector.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("configs/collector.yaml differs from DefaultConfig():\n got %+v\nwant %+v", got, want)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	yaml := `
nats: {servers: []}
node: "gpu.1"
window: 1s
slot: 300ms
call_timeout: 2s
buffer_max: 0
buffer_max_bytes: 10
max_pending: 0
ack_timeout: 0s
log_level: loud
location: {site: dc1, hall: "h 1", row: r01, rack: ""}
topology_file: /x.yaml
sim: {model: dgxa100}
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(path)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, key := range []string{"nats.servers", "node:", "window:", "call_timeout:", "buffer_max:", "buffer_max_bytes:",
		"max_pending:", "ack_timeout:", "log_level:", "location.hall:", "location.rack:", "location:", "sim.model:"} {
		if !strings.Contains(msg, key) {
			t.Errorf("error does not name %s:\n%s", key, msg)
		}
	}
	for _, line := range strings.Split(msg, "\n") {
		if !strings.HasPrefix(line, path+": ") {
			t.Errorf("problem without the file name: %q", line)
		}
	}
}

func TestLoadConfigRejectsUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "typo.yaml")
	if err := os.WriteFile(path, []byte("windw: 2s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "windw") || !strings.Contains(err.Error(), path) {
		t.Errorf("unknown key: got %v", err)
	}
}

func TestLocate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Location = &LocationConfig{Site: "dc9", Hall: "h2", Row: "r03", Rack: "rk07"}
	loc, err := Locate(cfg, "lab-node")
	if err != nil || loc.String() != "dc9/h2/r03/rk07/lab-node" {
		t.Errorf("explicit location: %v %v", loc, err)
	}
	cfg.Location = nil
	if loc, err := Locate(cfg, testLoc.Node); err != nil || loc != testLoc {
		t.Errorf("embedded topology: %v %v", loc, err)
	}
	if _, err := Locate(cfg, "no-such-node"); err == nil || !strings.Contains(err.Error(), "no-such-node") || !strings.Contains(err.Error(), "topology.yaml") {
		t.Errorf("unknown node: %v", err)
	}
	cfg.TopologyFile = filepath.Join("..", "configs", "topology.yaml")
	if _, err := Locate(cfg, "no-such-node"); err == nil || !strings.Contains(err.Error(), cfg.TopologyFile) {
		t.Errorf("unknown node in file: %v", err)
	}
}
