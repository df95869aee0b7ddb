package facilitytest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

// amAlert is one alert as Alertmanager's /api/v2/alerts lists it.
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// amActive is the domains (label domain) for which Alertmanager holds
// alertname active now (not resolved: endsAt ahead), sorted.
func amActive(t testing.TB, base, alertname string) ([]string, []amAlert, error) {
	t.Helper()
	q := url.Values{}
	q.Set("active", "true")
	q.Set("silenced", "false")
	q.Set("inhibited", "false")
	q.Set("unprocessed", "true")
	q.Add("filter", fmt.Sprintf("alertname=%q", alertname))
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("alertmanager: %s", resp.Status)
	}
	var as []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&as); err != nil {
		return nil, nil, err
	}
	var doms []string
	var active []amAlert
	now := time.Now()
	for _, a := range as {
		if a.EndsAt.After(now) {
			doms = append(doms, a.Labels["domain"])
			active = append(active, a)
		}
	}
	slices.Sort(doms)
	return doms, active, nil
}

// waitAM polls Alertmanager until alertname is active for exactly the
// domains want (none: resolved everywhere).
func waitAM(t *testing.T, base, alertname string, want []string, what string) []amAlert {
	t.Helper()
	want = slices.Clone(want)
	slices.Sort(want)
	deadline := time.Now().Add(waitFor)
	var got []string
	var last error
	for time.Now().Before(deadline) {
		doms, as, err := amActive(t, base, alertname)
		if err == nil && slices.Equal(doms, want) {
			return as
		}
		got, last = doms, err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: Alertmanager has %s active for %q, want %q (last error: %v)", what, alertname, got, want, last)
	return nil
}
