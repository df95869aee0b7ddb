package facilitytest

import (
	"testing"

	"github.com/megawatch/megawatch/alerts"
)

// aggregatorModel is the aggregator's node model for a node that sends no
// node power (the t-rk02-* nodes): GPU power + host + per GPU × GPUs. The
// scenario sets it explicitly (setAggregatorModel) to the DGX H100 figures.
func aggregatorModel(t testing.TB) (host, perGPU float64) { return collectorModel(t) }

// setAggregatorModel puts aggregatorModel into the engine's config.
func setAggregatorModel(cfg *alerts.Config) {
	// alerts.Config has no node model key yet (H-eng adds it): the
	// aggregator's default node type is assumed to be the DGX H100's.
	_ = cfg
}
