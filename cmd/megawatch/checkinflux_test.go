package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/internal/testenv"
)

// check-influx reads a real influxd's limits: the example topology fits;
// a 1.6 GW topology exceeds max-values-per-tag and max-series-per-database,
// is warned about with the setting to change, and exits non-zero.
func TestCheckInflux(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ingest.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("targets:\n  - name: local\n    url: %s\n    bucket: mw/autogen\n", influx.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := runCheckInflux(context.Background(), []string{"--config", cfg}, &out, &errb); err != nil {
		t.Fatalf("example topology: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "max-series-per-database 1000000, max-values-per-tag 100000") {
		t.Errorf("output lacks the server's limits:\n%s", out.String())
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(`levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 2000000
    children:
      - name: h[01-08]
        capacity_kw: 250000
        children:
          - name: r[01-20]
            capacity_kw: 12000
            children:
              - name: k[01-40]
                capacity_kw: 300
                nodes: ["n-{hall}-{row}-{rack}-[01-18]"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := runCheckInflux(context.Background(), []string{"--config", cfg, "--topology", big}, &out, &errb)
	if err == nil || !strings.Contains(out.String(), "max-values-per-tag = 0") || !strings.Contains(out.String(), "max-series-per-database = 0") {
		t.Errorf("1.6 GW topology: err %v\n%s", err, out.String())
	}
}
