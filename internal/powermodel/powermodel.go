// Package powermodel holds the built-in node types of the node-power model:
// a static host power plus a per-GPU overhead, added to the GPUs' own
// power. The collector's model source (collector/nodepower) and the alerts
// aggregator's estimate for nodes that send no node power share it.
package powermodel

import (
	"slices"
	"strings"
)

// NodeType is the model's static host power and per-GPU overhead of one
// kind of node. The estimate is HostW + PerGPUW × GPUs + the GPUs' power.
type NodeType struct {
	HostW   float64 // CPUs, memory, storage, NICs/DPUs: does not scale with the GPUs
	PerGPUW float64 // NVSwitch share, fans, VRM and PSU losses per GPU at full load
	GPUW    float64 // the GPU's TDP in the spec the figures come from
	MaxW    float64 // the spec's maximum system power (HostW + GPUs × (PerGPUW + GPUW))
	Match   string  // substring of the NVML GPU name for node_type auto
}

// Default is the node type used when none is configured (the aggregator's
// node_model zero value).
const Default = "dgxh100"

// AutoOrder is the order node_type auto tries the types' Match against the
// GPU name (most specific first).
var autoOrder = [...]string{"dgxb200", "dgxh200", "dgxh100"}

// nodeTypes are the defaults, derived from the vendors' published maximum
// system power (docs/collector.md "Node power" shows the arithmetic):
// DGX H100 and DGX H200 10.2 kW max with 8 × 700 W GPUs, DGX B200 14.3 kW
// max with 8 × 1000 W GPUs. The static host part is 1.5 kW (2 × 350 W
// Xeon TDP, ≈ 400 W DDR5, ≈ 400 W NICs/DPUs/NVMe); the rest of the spec
// headroom is spread per GPU.
var nodeTypes = map[string]NodeType{
	"dgxh100": {HostW: 1500, PerGPUW: 387.5, GPUW: 700, MaxW: 10_200, Match: "H100"},
	"dgxh200": {HostW: 1500, PerGPUW: 387.5, GPUW: 700, MaxW: 10_200, Match: "H200"},
	"dgxb200": {HostW: 1500, PerGPUW: 600, GPUW: 1000, MaxW: 14_300, Match: "B200"},
}

// Lookup returns the built-in figures of a node type.
func Lookup(name string) (NodeType, bool) {
	t, ok := nodeTypes[name]
	return t, ok
}

// Names lists the built-in node types, sorted.
func Names() []string {
	n := make([]string, 0, len(nodeTypes))
	for k := range nodeTypes {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// Match returns the node type whose Match is in the GPU name (node_type
// auto), trying the most specific first.
func Match(gpuName string) (NodeType, bool) {
	if gpuName == "" {
		return NodeType{}, false
	}
	for _, k := range autoOrder {
		if t := nodeTypes[k]; strings.Contains(gpuName, t.Match) {
			return t, true
		}
	}
	return NodeType{}, false
}
