package meters

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadConfig: any bytes as a meters config give a valid config or an
// error, never a panic; what loads validates.
func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "configs", "meters.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("interval: 100ms\ntimeout: 99ms\nworkers: 1\nbackoff_max: 100ms\n"))
	f.Add([]byte("interval: -1s\nnats: {servers: []}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "meters.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
	})
}
