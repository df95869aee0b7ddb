package collector

import (
	"fmt"
	"os"
	"strings"

	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// embeddedTopology names the built-in topology in messages.
const embeddedTopology = configs.EmbeddedTopology

// NodeName is cfg.Node, or the host name up to its first dot.
func (c Config) NodeName() (string, error) {
	if c.Node != "" {
		return c.Node, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("node name: %w (set node or --node)", err)
	}
	h, _, _ = strings.Cut(h, ".")
	if err := telemetry.ValidateToken(h); err != nil {
		return "", fmt.Errorf("node name from host name: %w (set node or --node)", err)
	}
	return h, nil
}

// Locate places node: at cfg.Location when set, else where the topology
// file (cfg.TopologyFile, or the embedded configs/topology.yaml) lists it.
func Locate(cfg Config, node string) (telemetry.Location, error) {
	if l := cfg.Location; l != nil {
		loc := telemetry.Location{Site: l.Site, Hall: l.Hall, Row: l.Row, Rack: l.Rack, Node: node}
		if err := loc.Validate(); err != nil {
			return telemetry.Location{}, fmt.Errorf("location of node %q: %w", node, err)
		}
		return loc, nil
	}
	topo, source, err := loadTopology(cfg)
	if err != nil {
		return telemetry.Location{}, err
	}
	n, ok := topo.Node(node)
	if !ok {
		return telemetry.Location{}, fmt.Errorf("node %q is not in topology %s: add it there, pass --node, or set location: {site, hall, row, rack} in the collector config", node, source)
	}
	return n.Location, nil
}

// FirstNode is the first node of the topology: the default node of
// `megawatch collector --sim`, so that it runs anywhere.
func FirstNode(cfg Config) (string, error) {
	topo, source, err := loadTopology(cfg)
	if err != nil {
		return "", err
	}
	if topo.NumNodes() == 0 {
		return "", fmt.Errorf("topology %s lists no nodes", source)
	}
	return topo.Nodes()[0].Name, nil
}

// loadTopology reads cfg.TopologyFile, or the embedded configs/topology.yaml.
func loadTopology(cfg Config) (*topology.Topology, string, error) {
	source := cfg.TopologyFile
	if source == "" {
		source = embeddedTopology
	}
	t, err := configs.LoadTopology(cfg.TopologyFile)
	return t, source, err
}
