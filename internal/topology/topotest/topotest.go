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

// MeteredCampus is Campus with meters (Modbus definitions, never polled):
// two PDUs per rack, a branch-circuit meter per row, a switchgear meter per
// hall; 18 nodes per rack.
func MeteredCampus(tb testing.TB, halls, rows, racks, rackKW int) *topology.Topology {
	tb.Helper()
	m := func(name string) string {
		return fmt.Sprintf(`{name: "%s", protocol: modbus, address: "%s:502", modbus: {power: {address: 0, type: u32}}}`, name, name)
	}
	y := fmt.Sprintf(`
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: %d
    children:
      - name: h[%02d-%02d]
        capacity_kw: %d
        meters: [%s]
        children:
          - name: r[%02d-%02d]
            capacity_kw: %d
            meters: [%s]
            children:
              - name: k[%02d-%02d]
                capacity_kw: %d
                nodes: ["g-{hall}-{row}-{rack}-n[01-18]"]
                meters: [%s, %s]
`, halls*rows*racks*rackKW, 1, halls, rows*racks*rackKW, m("swgr-{hall}"), 1, rows, racks*rackKW, m("bcm-{hall}-{row}"),
		1, racks, rackKW, m("pdu-{hall}-{row}-{rack}-a"), m("pdu-{hall}-{row}-{rack}-b"))
	topo, err := topology.Parse([]byte(y), "bench")
	if err != nil {
		tb.Fatal(err)
	}
	return topo
}
