package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzConfigFiles: any bytes given as a collector, ingest, alerts or
// topology file give a config or an error, never a panic.
func FuzzConfigFiles(f *testing.F) {
	for _, name := range []string{"collector.yaml", "ingest.yaml", "alerts.yaml", "topology.yaml"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "configs", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("window: 1s\nslot: [1]\nnats: {servers: []}\n"))
	kinds := configKinds()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, load := range kinds {
			_ = load(p)
		}
	})
}
