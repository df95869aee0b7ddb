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
		coll + ": line 3: field bogus_key not found",
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
