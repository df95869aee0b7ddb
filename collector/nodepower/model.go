package nodepower

import (
	"strings"

	"github.com/megawatch/megawatch/internal/powermodel"
)

// NodeType is the model's static host power and per-GPU overhead of one
// kind of node (internal/powermodel has the built-in figures and where
// they come from).
type NodeType = powermodel.NodeType

// nodeTypes are the built-in node types (internal/powermodel).
var nodeTypes = func() map[string]NodeType {
	m := map[string]NodeType{}
	for _, n := range powermodel.Names() {
		m[n], _ = powermodel.Lookup(n)
	}
	return m
}()

func nodeTypeNames() string { return strings.Join(powermodel.Names(), ", ") }

// LookupNodeType returns the built-in figures of a node type.
func LookupNodeType(name string) (NodeType, bool) { return powermodel.Lookup(name) }

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
		t, found = powermodel.Match(gpuModel)
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
