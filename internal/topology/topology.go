// Package topology is the power hierarchy: named levels (site, hall, row,
// rack, and extra levels such as pdu), the domains at each level with their
// capacity, and the nodes in each rack. It is the single source of truth for
// where a node is and how many nodes each domain expects.
package topology

import (
	"fmt"
	"strings"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// The canonical levels. A topology's levels contain them in this order, with
// rack last; extra levels may sit between them.
const (
	LevelSite = "site"
	LevelHall = "hall"
	LevelRow  = "row"
	LevelRack = "rack"
)

// DefaultLevels are used when a file names none.
var defaultLevels = []string{LevelSite, LevelHall, LevelRow, LevelRack}

// Domain is one node of the power tree: a site, hall, row, rack or extra level.
type Domain struct {
	ID            int // dense index into Topology.Domains(); parents before children
	Level         string
	Depth         int // index of Level in Topology.Levels()
	Name          string
	Path          []string // names from the site down to this domain
	CapacityW     float64
	Parent        *Domain // nil for a site
	Children      []*Domain
	Nodes         []string // racks only: node host names
	NodesExpected int      // nodes in this subtree
	Meters        []*Meter // facility meters that measure this domain
	key           string
}

// Key is the domain's path joined with "/", e.g. "dc1/h1/r01".
func (d *Domain) Key() string { return d.key }

// Node is one GPU node.
type Node struct {
	Name     string
	Location telemetry.Location
	Rack     *Domain
	Index    int // dense index into Topology.Nodes()
}

// Topology is a loaded, validated power tree. It is read-only after Parse
// and safe for concurrent use.
type Topology struct {
	source  string
	levels  []string
	sites   []*Domain
	domains []*Domain
	byKey   map[string]*Domain
	byLevel map[string][]*Domain
	nodes   []*Node
	byName  map[string]*Node

	meters      []*Meter
	meterByName map[string]*Meter
}

// Source is the file (or name) the topology was read from.
func (t *Topology) Source() string { return t.source }

// Levels are the level names from the top (site) to rack.
func (t *Topology) Levels() []string { return append([]string(nil), t.levels...) }

// Sites are the top-level domains.
func (t *Topology) Sites() []*Domain { return t.sites }

// Domains are all domains, parents before children; Domains()[d.ID] == d.
func (t *Topology) Domains() []*Domain { return t.domains }

// Domain finds a domain by its path of names.
func (t *Topology) Domain(path ...string) (*Domain, bool) {
	d, ok := t.byKey[strings.Join(path, "/")]
	return d, ok
}

// DomainsAt lists the domains of one level, in tree order.
func (t *Topology) DomainsAt(level string) []*Domain { return t.byLevel[level] }

// Node finds a node by host name.
func (t *Topology) Node(name string) (*Node, bool) {
	n, ok := t.byName[name]
	return n, ok
}

// Nodes are all nodes in tree order; Nodes()[n.Index] == n.
func (t *Topology) Nodes() []*Node { return t.nodes }

// NumNodes is len(Nodes()).
func (t *Topology) NumNodes() int { return len(t.nodes) }

// Ancestors lists the domains that contain n, from the site down to its rack.
func (t *Topology) Ancestors(n *Node) []*Domain {
	var out []*Domain
	for d := n.Rack; d != nil; d = d.Parent {
		out = append(out, d)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Scope returns the domain for a scope such as "dc1.h1" (or "dc1/h1").
func (t *Topology) Scope(scope string) (*Domain, error) {
	path := strings.FieldsFunc(scope, func(r rune) bool { return r == '.' || r == '/' })
	d, ok := t.Domain(path...)
	if !ok {
		return nil, fmt.Errorf("scope %q: no such domain in %s", scope, t.source)
	}
	return d, nil
}

// Contains reports whether domain d is n's rack or one of its ancestors.
func (d *Domain) Contains(n *Node) bool {
	for a := n.Rack; a != nil; a = a.Parent {
		if a == d {
			return true
		}
	}
	return false
}
