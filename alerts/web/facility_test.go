package web_test

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/web"
)

// The facility fields in /api/snapshot: watts under the engine's JSON
// names, metered_w and unaccounted_w absent when no meter covers the
// domain (never 0 W), and a NaN figure sent as no figure.
func TestAPISnapshotFacility(t *testing.T) {
	srv := serve(t, newFakeSource(), time.Second)
	_, body := get(t, srv.URL+"/api/snapshot")
	var raw struct {
		Halls []map[string]any `json:"halls"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatal(err)
	}
	h1, h2 := raw.Halls[0], raw.Halls[1]
	for k, want := range map[string]any{"gpu_w": 23.9e6, "node_w": 28.6e6, "metered_w": 30.1e6, "facility_w": 30.1e6,
		"facility_source": "meter", "unaccounted_w": 1.5e6, "meters_stale": 0.0} {
		if h1[k] != want {
			t.Errorf("h1 %s = %v, want %v", k, h1[k], want)
		}
	}
	for _, k := range []string{"metered_w", "unaccounted_w"} {
		if _, ok := h2[k]; ok {
			t.Errorf("h2 (stale meter) has %s = %v, want it absent", k, h2[k])
		}
	}
	if h2["meters_stale"] != 1.0 || h2["facility_source"] != "node" {
		t.Errorf("h2: %v", h2)
	}

	nan := math.NaN()
	srv = serve(t, staticSource{web.Snapshot{Halls: []web.DomainView{{Key: "h", MeteredW: &nan, UnaccountedW: &nan, NodeW: math.Inf(1), FacilitySource: "meter"}}}}, time.Second)
	_, body = get(t, srv.URL+"/api/snapshot")
	raw.Halls = nil
	if err := json.Unmarshal([]byte(body), &raw); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if _, ok := raw.Halls[0]["metered_w"]; ok || raw.Halls[0]["node_w"] != 0.0 {
		t.Errorf("NaN/Inf facility figures: %v", raw.Halls[0])
	}
}

type staticSource struct{ s web.Snapshot }

func (s staticSource) Snapshot() web.Snapshot { return s.s }
