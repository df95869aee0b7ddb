package topology

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// maxNodes bounds a topology (5 GW is about 350k nodes).
const maxNodes = 2_000_000

// File is the YAML form of a topology.
type File struct {
	Levels  []string     `yaml:"levels"`
	Domains []FileDomain `yaml:"domains"`
}

// FileDomain is one domain (or a range of identical sibling domains when
// Name is a pattern such as "r[01-40]").
type FileDomain struct {
	Name       string       `yaml:"name"`
	CapacityKW float64      `yaml:"capacity_kw"`
	Children   []FileDomain `yaml:"children"`
	// Nodes, for racks: host names or patterns; {site}, {hall}, {row},
	// {rack} (any level) are replaced by the enclosing domains' names.
	Nodes []string `yaml:"nodes"`
	// Meters measure this domain (docs/meters.md); any level may have them.
	Meters []FileMeter `yaml:"meters"`
}

// Load reads and validates a topology file. Every problem is reported, each
// with the file and the key.
func Load(path string) (*Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	return Parse(b, path)
}

// Parse reads and validates a topology; source names it in errors.
func Parse(data []byte, source string) (*Topology, error) {
	var f File
	if err := config.Decode(data, source, &f); err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	t, err := f.build(source)
	if err != nil {
		return nil, config.Annotate(source, err)
	}
	return t, nil
}

// Validate reports every problem of the file at once, each with its key.
func (f File) Validate() error {
	_, err := f.build("")
	return err
}

type builder struct {
	t     *Topology
	errs  []error
	where map[string]string // node name → key where it was defined

	meterWhere map[string]string    // meter name → key where it was defined
	meterSpecs map[string]meterSpec // meter key → its checked definition
}

func (b *builder) errf(key, format string, a ...any) {
	if len(b.errs) < 200 { // a systematic mistake in a big tree is one story, not 70k lines
		b.errs = append(b.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
}

func (f File) build(source string) (*Topology, error) {
	levels := f.Levels
	if len(levels) == 0 {
		levels = defaultLevels
	}
	b := &builder{
		t: &Topology{source: source, levels: slices.Clone(levels), byKey: map[string]*Domain{},
			byLevel: map[string][]*Domain{}, byName: map[string]*Node{}, meterByName: map[string]*Meter{}},
		where: map[string]string{}, meterWhere: map[string]string{}, meterSpecs: map[string]meterSpec{},
	}
	b.checkLevels(levels)
	if len(b.errs) > 0 {
		return nil, errors.Join(b.errs...)
	}
	if len(f.Domains) == 0 {
		b.errf("domains", "at least one %s is required", levels[0])
	}
	b.t.sites = b.domains(f.Domains, "domains", nil, map[string]string{})
	if len(b.errs) > 0 {
		return nil, errors.Join(b.errs...)
	}
	return b.t, nil
}

func (b *builder) checkLevels(levels []string) {
	seen := map[string]bool{}
	var canon []string
	for i, l := range levels {
		if err := telemetry.ValidateToken(l); err != nil {
			b.errf(fmt.Sprintf("levels[%d]", i), "%v", err)
		}
		if seen[l] {
			b.errf(fmt.Sprintf("levels[%d]", i), "level %q appears twice", l)
		}
		seen[l] = true
		if slices.Contains(defaultLevels, l) {
			canon = append(canon, l)
		}
	}
	if !slices.Equal(canon, defaultLevels) {
		b.errf("levels", "must contain site, hall, row, rack in that order (extra levels may sit between them), got %v", levels)
	}
	if len(levels) > 0 && levels[len(levels)-1] != LevelRack {
		b.errf("levels", "rack must be the last level (nodes sit in racks), got %v", levels)
	}
	if len(levels) > 0 && levels[0] != LevelSite {
		b.errf("levels", "site must be the first level, got %v", levels)
	}
}

func (b *builder) domains(list []FileDomain, key string, parent *Domain, names map[string]string) []*Domain {
	depth := 0
	if parent != nil {
		depth = parent.Depth + 1
	}
	level := b.t.levels[depth]
	var out []*Domain
	seen := map[string]string{}
	for i, fd := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		if fd.Name == "" {
			b.errf(k+".name", "required")
			continue
		}
		expanded, err := Expand(fd.Name)
		if err != nil {
			b.errf(k+".name", "%v", err)
			continue
		}
		if fd.CapacityKW <= 0 {
			b.errf(k+".capacity_kw", "must be positive, got %v", fd.CapacityKW)
		}
		isRack := level == LevelRack
		if isRack && len(fd.Children) > 0 {
			b.errf(k+".children", "a rack holds nodes, not children")
		}
		if !isRack && len(fd.Nodes) > 0 {
			b.errf(k+".nodes", "nodes belong in racks; this is a %s", level)
		}
		if !isRack && len(fd.Children) == 0 {
			b.errf(k+".children", "a %s needs at least one %s", level, b.t.levels[depth+1])
		}
		if isRack && len(fd.Nodes) == 0 {
			b.errf(k+".nodes", "a rack needs at least one node")
		}
		for _, name := range expanded {
			if err := telemetry.ValidateToken(name); err != nil {
				b.errf(k+".name", "%v", err)
				break
			}
			if prev, dup := seen[name]; dup {
				b.errf(k+".name", "%s %q is also defined at %s", level, name, prev)
				continue
			}
			seen[name] = k
			d := &Domain{ID: len(b.t.domains), Level: level, Depth: depth, Name: name, CapacityW: fd.CapacityKW * 1000, Parent: parent}
			if parent != nil {
				d.Path = append(slices.Clone(parent.Path), name)
			} else {
				d.Path = []string{name}
			}
			d.key = strings.Join(d.Path, "/")
			b.t.domains = append(b.t.domains, d)
			b.t.byKey[d.key] = d
			b.t.byLevel[level] = append(b.t.byLevel[level], d)
			sub := make(map[string]string, len(names)+1)
			for kk, vv := range names {
				sub[kk] = vv
			}
			sub[level] = name
			if len(fd.Meters) > 0 {
				b.meters(d, fd.Meters, k+".meters", sub)
			}
			if isRack {
				b.rackNodes(d, fd.Nodes, k+".nodes", sub)
			} else if len(fd.Children) > 0 {
				d.Children = b.domains(fd.Children, k+".children", d, sub)
			}
			for _, c := range d.Children {
				d.NodesExpected += c.NodesExpected
			}
			out = append(out, d)
			if len(b.errs) >= 200 {
				return out
			}
		}
	}
	return out
}

func (b *builder) rackNodes(rack *Domain, patterns []string, key string, names map[string]string) {
	for i, p := range patterns {
		k := fmt.Sprintf("%s[%d]", key, i)
		s, err := substitute(p, names)
		if err != nil {
			b.errf(k, "%v", err)
			continue
		}
		expanded, err := Expand(s)
		if err != nil {
			b.errf(k, "%v", err)
			continue
		}
		if len(b.t.nodes)+len(expanded) > maxNodes {
			b.errf(k, "topology exceeds %d nodes", maxNodes)
			return
		}
		for _, name := range expanded {
			if err := telemetry.ValidateToken(name); err != nil {
				b.errf(k, "node %v", err)
				break
			}
			if prev, dup := b.where[name]; dup {
				b.errf(k, "node %q is also defined at %s", name, prev)
				continue
			}
			b.where[name] = k
			n := &Node{Name: name, Rack: rack, Index: len(b.t.nodes)}
			rack.Nodes = append(rack.Nodes, name)
			rack.NodesExpected++
			b.t.nodes = append(b.t.nodes, n)
			b.t.byName[name] = n
		}
	}
	// Locations need the canonical ancestors.
	for _, name := range rack.Nodes {
		n := b.t.byName[name]
		if n.Rack != rack {
			continue
		}
		loc := telemetry.Location{Node: name}
		for d := rack; d != nil; d = d.Parent {
			switch d.Level {
			case LevelSite:
				loc.Site = d.Name
			case LevelHall:
				loc.Hall = d.Name
			case LevelRow:
				loc.Row = d.Name
			case LevelRack:
				loc.Rack = d.Name
			}
		}
		n.Location = loc
	}
}

// Build validates the file and builds the topology; source names it in errors.
func (f File) Build(source string) (*Topology, error) {
	t, err := f.build(source)
	if err != nil {
		return nil, config.Annotate(source, err)
	}
	return t, nil
}
