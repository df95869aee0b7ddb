package alerts

import (
	"fmt"
	"strings"

	"github.com/megawatch/megawatch/alerts/aggregate"
)

// NodeModelConfig is `node_model:`: how the aggregator estimates the node
// power of a node whose collector sends none (GPU power + host_w +
// per_gpu_w × GPUs). Either a built-in node_type or both figures; empty is
// the default node type.
type NodeModelConfig struct {
	// NodeType is a built-in node type (dgxh100, dgxh200, dgxb200).
	NodeType string `yaml:"node_type,omitempty"`
	// HostW is the static host power per node (CPUs, memory, NICs), W.
	HostW *float64 `yaml:"host_w,omitempty"`
	// PerGPUW is the overhead per GPU (NVSwitch share, fans, PSU losses), W.
	PerGPUW *float64 `yaml:"per_gpu_w,omitempty"`
}

// validate returns the problems of c under key.
func (c NodeModelConfig) validate(key string) []error {
	var errs []error
	bad := func(k, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(f, a...)))
	}
	if c.NodeType != "" {
		if _, _, ok := lookupNodeType(c.NodeType); !ok {
			bad("node_type", "unknown node type %q (one of %s)", c.NodeType, strings.Join(nodeTypeNames(), ", "))
		}
		if c.HostW != nil || c.PerGPUW != nil {
			bad("node_type", "set node_type or host_w and per_gpu_w, not both")
		}
		return errs
	}
	if (c.HostW == nil) != (c.PerGPUW == nil) {
		bad("host_w", "set both host_w and per_gpu_w (or node_type)")
	}
	if c.HostW != nil && !(*c.HostW >= 0 && *c.HostW <= 100_000) {
		bad("host_w", "want 0..100000 W per node, got %v", *c.HostW)
	}
	if c.PerGPUW != nil && !(*c.PerGPUW >= 0 && *c.PerGPUW <= 10_000) {
		bad("per_gpu_w", "want 0..10000 W per GPU, got %v", *c.PerGPUW)
	}
	return errs
}

// model is the aggregator's node model; the zero value (default node type)
// when c is empty. c must be valid.
func (c NodeModelConfig) model() aggregate.NodeModel {
	if c.NodeType != "" {
		h, g, _ := lookupNodeType(c.NodeType)
		return aggregate.NodeModel{HostW: h, PerGPUW: g}
	}
	if c.HostW != nil && c.PerGPUW != nil {
		return aggregate.NodeModel{HostW: *c.HostW, PerGPUW: *c.PerGPUW}
	}
	return aggregate.NodeModel{}
}
