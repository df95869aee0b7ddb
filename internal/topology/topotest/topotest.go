// Package topotest builds synthetic campus topologies for tests and
// benchmarks.
package topotest

import (
	"fmt"
	"testing"

	"github.com/megawatch/megawatch/internal/topology"
)

// Campus is site dc1 with halls × rows × racks racks of 18 nodes each
// (g-<hall>-<row>-<rack>-n01…n18), every rack rackKW of capacity and every
// level the sum of its children.
func Campus(tb testing.TB, halls, rows, racks, rackKW int) *topology.Topology {
	tb.Helper()
	y := fmt.Sprintf(`
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: %d
    children:
      - name: h[%02d-%02d]
        capacity_kw: %d
        children:
          - name: r[%02d-%02d]
            capacity_kw: %d
            children:
              - name: k[%02d-%02d]
                capacity_kw: %d
                nodes: ["g-{hall}-{row}-{rack}-n[01-18]"]
`, halls*rows*racks*rackKW, 1, halls, rows*racks*rackKW, 1, rows, racks*rackKW, 1, racks, rackKW)
	topo, err := topology.Parse([]byte(y), "topotest")
	if err != nil {
		tb.Fatal(err)
	}
	return topo
}
