package topology

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: arbitrary bytes never panic the loader; whatever loads is
// internally consistent.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"topology.yaml", "demo-topology.yaml"} {
		if b, err := os.ReadFile(filepath.Join("..", "..", "configs", name)); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(small))
	f.Add([]byte("domains: [{name: 's[1-2]', capacity_kw: 1, children: [{name: h, capacity_kw: 1, children: [{name: r, capacity_kw: 1, children: [{name: 'k[1-3]', capacity_kw: 1, nodes: ['{site}-{rack}-n[01-02]']}]}]}]}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		topo, err := Parse(data, "fuzz.yaml")
		if err != nil {
			return
		}
		for i, n := range topo.Nodes() {
			if n.Index != i || n.Rack == nil {
				t.Fatalf("node %d inconsistent: %+v", i, n)
			}
			if err := n.Location.Validate(); err != nil {
				t.Fatalf("node %s has invalid location: %v", n.Name, err)
			}
		}
		for i, d := range topo.Domains() {
			if d.ID != i {
				t.Fatalf("domain %d has ID %d", i, d.ID)
			}
		}
	})
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"r[01-40]", "a[1,2,3-5]b[0-1]", "x", "[", "]["} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := Expand(s)
		if err == nil && len(out) == 0 {
			t.Fatalf("Expand(%q) returned no names and no error", s)
		}
	})
}
