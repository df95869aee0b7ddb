package configs

import (
	"fmt"

	"github.com/megawatch/megawatch/internal/topology"
)

// EmbeddedTopology names the built-in topology in errors and logs.
const EmbeddedTopology = "configs/topology.yaml (embedded)"

// LoadTopology loads the topology file at path, or the embedded
// configs/topology.yaml when path is empty. Every subcommand that takes a
// topology file uses it.
func LoadTopology(path string) (*topology.Topology, error) {
	if path != "" {
		return topology.Load(path)
	}
	b, err := FS.ReadFile("topology.yaml")
	if err != nil {
		return nil, fmt.Errorf("embedded topology: %w", err)
	}
	return topology.Parse(b, EmbeddedTopology)
}
