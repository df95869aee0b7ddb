package facilitytest

import (
	"testing"

	"github.com/megawatch/megawatch/alerts"
)

// The aggregator's node model for a node that sends no node power (the
// t-rk02-* nodes): GPU power + host + per GPU × GPUs. The scenario gives
// the engine its own figures (node_model: {host_w, per_gpu_w}), not the
// collector's dgxh100 ones, so that the rollups show which model estimated
// what.
const (
	aggHostW   = 1200
	aggPerGPUW = 250
)

func aggregatorModel(testing.TB) (host, perGPU float64) { return aggHostW, aggPerGPUW }

// setAggregatorModel puts aggregatorModel into the engine's config.
func setAggregatorModel(cfg *alerts.Config) {
	host, per := float64(aggHostW), float64(aggPerGPUW)
	cfg.NodeModel = alerts.NodeModelConfig{HostW: &host, PerGPUW: &per}
}
