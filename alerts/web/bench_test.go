package web

import (
	"fmt"
	"testing"
	"time"
)

// benchSnapshot is a campus of `sites` sites with `halls` halls each, a
// minute of 10 Hz power per site and ten active alerts.
func benchSnapshot(sites, halls int) Snapshot {
	now := time.Now()
	s := Snapshot{At: now, WindowMs: 1000, SiteSeries: map[string][]Point{}}
	for i := range sites {
		site := fmt.Sprintf("dc%d", i+1)
		s.Sites = append(s.Sites, DomainView{Level: "site", Path: []string{site}, Key: site, PowerMW: 980.5, CapacityMW: 1000, Coverage: 0.999})
		pts := make([]Point, 600)
		for j := range pts {
			pts[j] = Point{T: now.Add(time.Duration(j-600) * 100 * time.Millisecond).UnixMilli(), MW: 980 + float64(j%20)/3}
		}
		s.SiteSeries[site] = pts
		for h := range halls {
			hall := fmt.Sprintf("h%02d", h+1)
			s.Halls = append(s.Halls, DomainView{Level: "hall", Path: []string{site, hall}, Key: site + "/" + hall, PowerMW: 24.5, CapacityMW: 25})
		}
	}
	for i := range 10 {
		s.Alerts = append(s.Alerts, AlertView{Rule: "hall_power_high", Severity: "warning", Level: "hall", Domain: fmt.Sprintf("dc1/h%02d", i+1),
			State: "firing", Value: 24.5, Threshold: 22.5, Summary: "hall draws 24.5 MW, above 22.5 MW", ActiveSince: now})
	}
	return s
}

// BenchmarkEncodeSnapshot is the per-interval cost of the live page: one
// encode per Handler per interval, shared by every client.
func BenchmarkEncodeSnapshot(b *testing.B) {
	for _, c := range []struct{ sites, halls int }{{1, 2}, {1, 40}, {5, 40}} {
		b.Run(fmt.Sprintf("sites=%d/halls=%d", c.sites, c.halls), func(b *testing.B) {
			s := benchSnapshot(c.sites, c.halls)
			b.ReportAllocs()
			var n int
			for b.Loop() {
				body, err := encodeSnapshot(s)
				if err != nil {
					b.Fatal(err)
				}
				n = len(body)
			}
			b.SetBytes(int64(n))
			b.ReportMetric(float64(n), "bytes/snapshot")
		})
	}
}

// BenchmarkBroadcast hands one encoded snapshot to 1000 connected clients
// (latest wins): what the poller does each interval.
func BenchmarkBroadcast(b *testing.B) {
	h := newHub(nil, nil, time.Second)
	subs := make([]*subscriber, 1000)
	for i := range subs {
		subs[i] = &subscriber{ch: make(chan []byte, 1)}
		h.subs[subs[i]] = struct{}{}
	}
	body := []byte("{}")
	b.ReportAllocs()
	for b.Loop() {
		h.broadcast(body)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/client")
}
