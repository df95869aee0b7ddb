package grafana_test

import (
	"testing"

	"github.com/megawatch/megawatch/internal/testenv"
)

// fill is how the dashboards' influxd gets its data.
func fill(t *testing.T, d *testenv.Influxd, db string) { fillSynthetic(t, d, db) }
