package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check-config prints every problem of every file at once, each with the
// file and its key or line, and accepts every shipped example.
func TestCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	examples := []string{"../../configs/collector.yaml", "../../configs/ingest.yaml", "../../configs/alerts.yaml",
		"../../configs/topology.yaml", "../../configs/demo-topology.yaml"}
	if err := runCheckConfig(context.Background(), examples, &out, &errb); err != nil {
		t.Fatalf("shipped examples rejected: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), ": ok"); n != len(examples) {
		t.Fatalf("%d ok lines, want %d:\n%s", n, len(examples), out.String())
	}

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	coll := write("collector-bad.yaml", "window: 250ms\ncall_timeout: 500ms\nbogus_key: 1\nbuffer_max: -5\n")
	ing := write("ingest-bad.yaml", "batch_lines: 0\ngzip_level: 42\n")
	topo := write("my-topology.yaml", "levels: [site, rack]\ndomains: []\n")
	out.Reset()
	err := runCheckConfig(context.Background(), []string{coll, ing, topo}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "3 of 3 config files are invalid") {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{
		coll + " (collector): invalid",
		coll + ": line 3: unknown key bogus_key",
		coll + ": window:",
		coll + ": buffer_max:",
		ing + " (ingest): invalid",
		ing + ": batch_lines:",
		ing + ": gzip_level:",
		topo + " (topology): invalid",
		topo + ": levels: must contain site, hall, row, rack",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := runCheckConfig(context.Background(), []string{write("whatever.yaml", "")}, &out, &errb); err == nil || !strings.Contains(err.Error(), "--kind") {
		t.Errorf("unknown kind: %v", err)
	}
}

// The kind comes from the file's keys whatever its name; keys that fit
// several kinds fall back to the name, then ask for --kind.
func TestCheckConfigKindFromContent(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var out, errb bytes.Buffer
	for path, kind := range map[string]string{
		write("prod.yaml", "targets: [{name: a, url: http://x:8086, bucket: megawatch/autogen}]\nworkers: 2\n"):                                                                                                                                     "ingest",
		write("site-a.yaml", "levels: [site, hall, row, rack]\ndomains: [{name: dc1, capacity_kw: 100, children: [{name: h1, capacity_kw: 50, children: [{name: r1, capacity_kw: 20, children: [{name: k1, capacity_kw: 10, nodes: [n1]}]}]}]}]\n"): "topology",
		write("node.yaml", "buffer_max: 10\nnats: {name: x}\n"):               "collector",
		write("ingest-looking-name.yaml", "rules_file: \"\"\nkv_bucket: X\n"): "alerts",
	} {
		out.Reset()
		err := runCheckConfig(context.Background(), []string{path}, &out, &errb)
		if err != nil || !strings.Contains(out.String(), "("+kind+"): ok") {
			t.Errorf("%s: %v, want kind %s ok:\n%s", filepath.Base(path), err, kind, out.String())
		}
	}
	// nats: alone fits three kinds: the name decides, else --kind.
	out.Reset()
	if err := runCheckConfig(context.Background(), []string{write("x-alerts.yaml", "nats: {name: x}\n")}, &out, &errb); err != nil || !strings.Contains(out.String(), "(alerts): ok") {
		t.Errorf("ambiguous keys, alerts name: %v\n%s", err, out.String())
	}
	if err := runCheckConfig(context.Background(), []string{write("x.yaml", "nats: {name: x}\n")}, &out, &errb); err == nil || !strings.Contains(err.Error(), "alerts and collector and ingest") || !strings.Contains(err.Error(), "--kind") {
		t.Errorf("ambiguous keys: %v", err)
	}
	if err := runCheckConfig(context.Background(), []string{"--kind", "bogus", "x.yaml"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "--kind") {
		t.Errorf("bad --kind: %v", err)
	}
}

// Type errors name the key and what it takes; listen addresses and
// ratio thresholds are validated.
func TestCheckConfigNamesKeysAndValidatesValues(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "alerts.yaml")
	if err := os.WriteFile(p, []byte("http_addr: nonsense\nwindow: soon\nrules:\n  - {name: cov, level: hall, metric: coverage, threshold: -0.5, severity: warning}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := runCheckConfig(context.Background(), []string{p}, &out, &errb); err == nil {
		t.Fatalf("accepted:\n%s", out.String())
	}
	for _, want := range []string{
		p + ": http_addr: \"nonsense\" is not host:port",
		p + ": line 2: window: `soon` is not a duration",
		p + ": rules[0] (cov): threshold: -0.5 is outside 0..1",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "time.Duration") {
		t.Errorf("Go type in:\n%s", out.String())
	}
}
