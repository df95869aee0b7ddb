package alerts

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/testenv"
)

// Sample-to-notification latency: a hall's load steps on and off six
// times; for every page and every resolve, the time from the step (the
// sample that crossed) to the notification arriving at a webhook receiver
// is the event-time delay (window end of the notifying tick - step) plus
// the grace the live ticker waits after each window end plus the measured
// wall-clock delivery (tick → HTTP receiver). The event-time delay must be
// ≤ window + for; p99 of the total is reported against window + for + 1 s.
func TestScenarioNotificationLatency(t *testing.T) {
	testenv.Short(t)
	const cycles = 6
	var jobs []sim.Job
	var steps []time.Duration // scenario offsets of the on and off steps
	for i := range cycles {
		on := 10*time.Second + time.Duration(i)*14*time.Second
		jobs = append(jobs, sim.Job{Name: fmt.Sprintf("j%d", i), Nodes: "hall=h1", Start: on, Stop: on + 7*time.Second,
			Period: 2 * time.Second, Duty: 1, ComputeFrac: 0.98, CommFrac: 0.98})
		steps = append(steps, on, on+7*time.Second)
	}
	forDur := 3 * time.Second
	w := newWorld(t, jobs, []rules.Rule{{Name: "hall_load", Level: "hall", Domains: []string{"dc1/h1"}, Metric: rules.MetricPowerMW, Power: rules.PowerGPU,
		OfCapacity: f(0.5), ClearOfCapacity: f(0.4), For: forDur, Severity: "warning"}})
	hook := newReceiver(t)
	w.cfg.Notifiers.Webhook.URL = hook.srv.URL
	w.startEngine()
	for win := 1; win <= 10+cycles*14+5; win++ {
		w.window(win)
	}
	waitFor(t, 10*time.Second, "every page and resolve", func() bool { return hook.count() >= 2*cycles })
	var lat []time.Duration
	n := 0
	for i, p := range hookAlerts(t, hook) {
		for _, a := range p.Alerts {
			step := w.start.Add(steps[n])
			n++
			ev := a.At.Sub(step)
			delivery := hook.arrival(i).Sub(w.tickedAt[a.At.UnixNano()])
			if ev < 0 || ev > time.Second+forDur {
				t.Errorf("notification %d (%s at %s): %s after its step", n, a.State, a.At.Sub(w.start), ev)
			}
			lat = append(lat, ev+w.cfg.Grace+delivery)
		}
	}
	if n != 2*cycles {
		t.Fatalf("%d notifications, want %d", n, 2*cycles)
	}
	slices.Sort(lat)
	p99 := lat[(len(lat)*99+99)/100-1]
	bound := time.Second + forDur + time.Second
	t.Logf("sample-to-notification latency over %d notifications: min %s median %s p99 %s (bound window+for+1s = %s)",
		len(lat), lat[0], lat[len(lat)/2], p99, bound)
	// The event-time part is asserted above (deterministic: the fake clock);
	// the wall-clock delivery part is measured and reported, not asserted —
	// no timed assertions in tests on a shared machine. README's
	// performance table carries the figure.
	if p99 > bound {
		t.Logf("NOTE: p99 latency %s above %s on this run (wall-clock delivery on a loaded machine)", p99, bound)
	}
}
