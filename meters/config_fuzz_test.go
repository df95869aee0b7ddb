package meters

import (
	"math"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadConfig: any bytes as a meters config give a valid config or an
// error, never a panic; what loads validates.
func FuzzLoadConfig(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "configs", "meters.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("interval: 100ms\ntimeout: 99ms\nworkers: 1\nbackoff_max: 100ms\n"))
	f.Add([]byte("interval: -1s\nnats: {servers: []}\n"))
	f.Add([]byte("sim_meters: {generate: [rack, row], feeds: [{level: row, loss_pct: 2, non_it_w: 10}, {meter: 'pdu-*', non_it_per_node_w: 5}]}\n" +
		"sim: {model: dgxb200, faults: [{kind: meter_silent, meter: 'pdu-*', from: 1s}, {kind: collector_down, node: 'row=r01'}]}\n"))
	f.Add([]byte("sim_meters: {feeds: [{level: '[', loss_pct: 101}]}\nsim: {faults: [{kind: meter_silent}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "meters.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v", err)
		}
		// Simulated meters of a valid config read finite, non-negative values.
		sms, err := SimMeters(simTopology(t, simHall), c.SimMeters)
		if err != nil {
			return
		}
		for _, s := range sms {
			if v := s.Value(func(int) uint32 { return 12_345_678 }); !(v >= 0) || math.IsInf(v, 0) {
				t.Fatalf("meter %s reads %v", s.Meter.Name, v)
			}
		}
	})
}
