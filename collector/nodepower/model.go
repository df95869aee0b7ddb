package nodepower

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
	match   string  // substring of the NVML GPU name for node_type auto
}

// nodeTypes are the defaults, derived from the vendors' published maximum
// system power (docs/collector.md "Node power" shows the arithmetic):
// DGX H100 and DGX H200 10.2 kW max with 8 × 700 W GPUs, DGX B200 14.3 kW
// max with 8 × 1000 W GPUs. The static host part is 1.5 kW (2 × 350 W
// Xeon TDP, ≈ 400 W DDR5, ≈ 400 W NICs/DPUs/NVMe); the rest of the spec
// headroom is spread per GPU.
var nodeTypes = map[string]NodeType{
	"dgxh100": {HostW: 1500, PerGPUW: 387.5, GPUW: 700, MaxW: 10_200, match: "H100"},
	"dgxh200": {HostW: 1500, PerGPUW: 387.5, GPUW: 700, MaxW: 10_200, match: "H200"},
	"dgxb200": {HostW: 1500, PerGPUW: 600, GPUW: 1000, MaxW: 14_300, match: "B200"},
}

func nodeTypeNames() string {
	var n []string
	for k := range nodeTypes {
		n = append(n, k)
	}
	slices.Sort(n)
	return strings.Join(n, ", ")
}

// LookupNodeType returns the built-in figures of a node type.
func LookupNodeType(name string) (NodeType, bool) {
	t, ok := nodeTypes[name]
	return t, ok
}

// Model is the estimate source. It is computed when a window is summarised
// from the GPUs' own figures, so it needs no goroutine.
type Model struct {
	cfg ModelConfig
}

// NewModel returns the estimate of cfg (validated).
func NewModel(cfg ModelConfig) *Model { return &Model{cfg: cfg} }

// params resolves the node type for a GPU model name.
func (m *Model) params(gpuModel string) (host, perGPU float64, ok bool) {
	t, found := nodeTypes[m.cfg.NodeType]
	if m.cfg.NodeType == "auto" || m.cfg.NodeType == "" {
		found = false
		for _, k := range []string{"dgxb200", "dgxh200", "dgxh100"} {
			if nt := nodeTypes[k]; gpuModel != "" && strings.Contains(gpuModel, nt.match) {
				t, found = nt, true
				break
			}
		}
	}
	host, perGPU = t.HostW, t.PerGPUW
	if m.cfg.HostW > 0 {
		host = m.cfg.HostW
	}
	if m.cfg.PerGPUW > 0 {
		perGPU = m.cfg.PerGPUW
	}
	return host, perGPU, found || (m.cfg.HostW > 0 && m.cfg.PerGPUW > 0)
}

// Estimate is the node power in mW for a window's GPUs: absent (false)
// when a GPU has no figure (the estimate would be low) or the node type is
// unknown.
func (m *Model) Estimate(g GPUs) (uint32, bool) {
	if !g.AllOK || g.Count == 0 {
		return 0, false
	}
	host, perGPU, ok := m.params(g.ModelID)
	if !ok {
		return 0, false
	}
	mw := (host+perGPU*float64(g.Count))*1000 + float64(g.SumMW)
	if mw > float64(^uint32(0)) {
		return 0, false
	}
	return uint32(mw + 0.5), true
}
