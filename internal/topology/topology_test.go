package topology

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/internal/telemetry"
)

func TestExpand(t *testing.T) {
	f := func(pattern string, want ...string) {
		t.Helper()
		got, err := Expand(pattern)
		if err != nil {
			t.Fatalf("Expand(%q): %v", pattern, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Expand(%q) = %v, want %v", pattern, got, want)
		}
	}
	f("node1", "node1")
	f("r[01-03]", "r01", "r02", "r03")
	f("n[8-11]", "n8", "n9", "n10", "n11")
	f("rk[1,3,5-6]", "rk1", "rk3", "rk5", "rk6")
	f("g-r[1-2]-n[01-02]", "g-r1-n01", "g-r1-n02", "g-r2-n01", "g-r2-n02")
	f("[1-2]x", "1x", "2x")

	bad := func(pattern, wantErr string) {
		t.Helper()
		_, err := Expand(pattern)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("Expand(%q) error = %v, want containing %q", pattern, err, wantErr)
		}
	}
	bad("r[01-", "']' without '['")
	bad("r]", "']' without '['")
	bad("r[]", "empty []")
	bad("r[a-b]", "must be numbers")
	bad("r[5-1]", "empty or too large")
	bad("r[[1]]", "nested")
	bad("n[0-999999]-m[0-999999]", "more than")
}

func TestGPUPatternFromDesign(t *testing.T) {
	got, err := Expand("gpu-h1-r[01-40]-n[01-18]")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 720 || got[0] != "gpu-h1-r01-n01" || got[719] != "gpu-h1-r40-n18" {
		t.Fatalf("got %d names, first %q last %q", len(got), got[0], got[len(got)-1])
	}
}

func TestLoadExampleFiles(t *testing.T) {
	for _, tc := range []struct {
		file         string
		nodes, sites int
		firstNode    telemetry.Location
	}{
		{"topology.yaml", 32, 1, telemetry.Location{Site: "dc1", Hall: "h1", Row: "r01", Rack: "rk01", Node: "gpu-h1-r01-rk01-n01"}},
		{"demo-topology.yaml", 6400, 1, telemetry.Location{Site: "demo", Hall: "h1", Row: "r01", Rack: "rk01", Node: "h1-r01-rk01-n01"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			topo, err := Load(filepath.Join("..", "..", "configs", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if topo.NumNodes() != tc.nodes || len(topo.Sites()) != tc.sites {
				t.Fatalf("nodes=%d sites=%d, want %d and %d", topo.NumNodes(), len(topo.Sites()), tc.nodes, tc.sites)
			}
			if got := topo.Nodes()[0].Location; got != tc.firstNode {
				t.Fatalf("first node at %+v, want %+v", got, tc.firstNode)
			}
			if got := topo.Sites()[0].NodesExpected; got != tc.nodes {
				t.Fatalf("site expects %d nodes, want %d", got, tc.nodes)
			}
			for i, d := range topo.Domains() {
				if d.ID != i {
					t.Fatalf("domain %s has ID %d at index %d", d.Key(), d.ID, i)
				}
				if d.Parent != nil && d.Parent.ID >= d.ID {
					t.Fatalf("parent %s after child %s", d.Parent.Key(), d.Key())
				}
			}
		})
	}
}

const small = `
levels: [site, hall, pdu, row, rack]
domains:
  - name: s1
    capacity_kw: 1000
    children:
      - name: h[1-2]
        capacity_kw: 500
        children:
          - name: pdu[a-b]
            capacity_kw: 200
            children: []
`

func TestLookupWithExtraLevel(t *testing.T) {
	const doc = `
levels: [site, hall, pdu, row, rack]
domains:
  - name: s1
    capacity_kw: 1000
    children:
      - name: h[1-2]
        capacity_kw: 500
        children:
          - name: p[1-2]
            capacity_kw: 250
            children:
              - name: r[1-3]
                capacity_kw: 80
                children:
                  - name: k[01-02]
                    capacity_kw: 40
                    nodes: ["{hall}-{pdu}-{row}-{rack}-n[1-4]", "spare-{hall}{pdu}{row}{rack}"]
`
	topo, err := Parse([]byte(doc), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := topo.NumNodes(), 2*2*3*2*5; got != want {
		t.Fatalf("nodes = %d, want %d", got, want)
	}
	n, ok := topo.Node("h2-p1-r3-k02-n4")
	if !ok {
		t.Fatal("node not found")
	}
	want := telemetry.Location{Site: "s1", Hall: "h2", Row: "r3", Rack: "k02", Node: "h2-p1-r3-k02-n4"}
	if n.Location != want {
		t.Fatalf("location %+v, want %+v", n.Location, want)
	}
	anc := topo.Ancestors(n)
	var keys []string
	for _, d := range anc {
		keys = append(keys, d.Level+":"+d.Key())
	}
	wantKeys := []string{"site:s1", "hall:s1/h2", "pdu:s1/h2/p1", "row:s1/h2/p1/r3", "rack:s1/h2/p1/r3/k02"}
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("ancestors %v, want %v", keys, wantKeys)
	}
	pdu, ok := topo.Domain("s1", "h2", "p1")
	if !ok || pdu.NodesExpected != 30 || pdu.CapacityW != 250e3 {
		t.Fatalf("pdu %+v", pdu)
	}
	if len(topo.DomainsAt("pdu")) != 4 || len(topo.DomainsAt(LevelRack)) != 24 {
		t.Fatalf("pdus %d racks %d", len(topo.DomainsAt("pdu")), len(topo.DomainsAt(LevelRack)))
	}
	d, err := topo.Scope("s1.h2")
	if err != nil || d.NodesExpected != 60 || !d.Contains(n) {
		t.Fatalf("scope: %v %+v", err, d)
	}
	if _, err := topo.Scope("s1.h9"); err == nil {
		t.Fatal("unknown scope accepted")
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	const doc = `
levels: [site, hall, row, rack]
domains:
  - name: s1
    capacity_kw: 0
    children:
      - name: h1
        capacity_kw: 10
        nodes: [x]
        children:
          - name: r.1
            capacity_kw: 5
            children:
              - name: k1
                capacity_kw: 1
                nodes: [dup, "n[1-"]
              - name: k1
                capacity_kw: 1
                nodes: [dup, "{pdu}-n1"]
          - name: r2
            capacity_kw: 5
            children:
              - name: k1
                capacity_kw: -1
`
	_, err := Parse([]byte(doc), "bad.yaml")
	if err == nil {
		t.Fatal("invalid topology accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"bad.yaml: domains[0].capacity_kw: must be positive",
		"bad.yaml: domains[0].children[0].nodes: nodes belong in racks",
		"bad.yaml: domains[0].children[0].children[0].name: invalid subject token \"r.1\"",
		"bad.yaml: domains[0].children[0].children[1].children[0].capacity_kw: must be positive",
		"bad.yaml: domains[0].children[0].children[1].children[0].nodes: a rack needs at least one node",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q\nfull error:\n%s", want, msg)
		}
	}
	// Every problem at once: one line each.
	if n := len(strings.Split(msg, "\n")); n < 5 {
		t.Errorf("want at least 5 problems, got %d:\n%s", n, msg)
	}
}

func TestValidationNodeProblems(t *testing.T) {
	const doc = `
domains:
  - name: s1
    capacity_kw: 10
    children:
      - name: h1
        capacity_kw: 10
        children:
          - name: r1
            capacity_kw: 10
            children:
              - name: k1
                capacity_kw: 1
                nodes: [dup, "n[1-"]
              - name: k2
                capacity_kw: 1
                nodes: [dup, "{pdu}-n1", "a b"]
`
	_, err := Parse([]byte(doc), "n.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`children[0].children[0].children[0].nodes[1]: pattern "n[1-": ']' without '['`,
		`children[0].children[0].children[1].nodes[0]: node "dup" is also defined at domains[0].children[0].children[0].children[0].nodes[0]`,
		`children[1].nodes[1]: placeholder {pdu} is not an enclosing level`,
		`children[1].nodes[2]: node invalid subject token "a b"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q\nfull error:\n%v", want, err)
		}
	}
}

func TestBadLevelsAndYAML(t *testing.T) {
	f := func(doc, want string) {
		t.Helper()
		_, err := Parse([]byte(doc), "x.yaml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error = %v, want containing %q", err, want)
		}
	}
	f("levels: [site, row, hall, rack]\ndomains: []", "must contain site, hall, row, rack in that order")
	f("levels: [site, hall, row, rack, pdu]\ndomains: []", "rack must be the last level")
	f("levels: [site, hall, hall, row, rack]\ndomains: []", `level "hall" appears twice`)
	f("domains: []", "domains: at least one site is required")
	f("domain: []", "x.yaml: yaml: unmarshal errors")
	f("domains: [{name: a, capacity_kw: lots}]", "cannot unmarshal")
	if _, err := Load("no-such-file.yaml"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
