package alerts

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// buildMegawatch builds the megawatch binary (without the race detector:
// the processes under test are what a deployment runs).
func buildMegawatch(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "megawatch")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/megawatch/megawatch/cmd/megawatch")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-O2 -g -Wno-deprecated-declarations")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build megawatch: %v\n%s", err, out)
	}
	return bin
}

// scrape reads one metric (with its label set, e.g. `x{result="late"}`)
// from a Prometheus text endpoint; -1 when absent or unreachable.
func scrape(url, metric string) float64 {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, metric+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// windowSums reads the power stream's reports with window ends in
// (from, to] and sums them per window end: GPU power of healthy GPUs (W)
// and reports.
func windowSums(t *testing.T, js jetstream.JetStream, from, to time.Time, grace time.Duration) (map[int64]float64, map[int64]int, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := from.Add(-time.Second)
	cons, err := js.CreateConsumer(ctx, telemetry.StreamPower, jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy,
		FilterSubject: telemetry.PowerWildcard, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start, InactiveThreshold: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	power, count := map[int64]float64{}, map[int64]int{}
	lateAtSource := 0
	var rep telemetry.NodeReport
	stopAt := to.Add(3 * time.Second) // stored by then: reports are published right after their window
	for {
		b, err := cons.Fetch(2000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var last time.Time
		for m := range b.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			last = md.Timestamp
			if err := proto.Unmarshal(m.Data(), &rep); err != nil {
				t.Fatal(err)
			}
			end := rep.GetWindowEndUnixNs()
			if end <= from.UnixNano() || end > to.UnixNano() {
				continue
			}
			p := 0.0
			for _, g := range rep.GetGpus() {
				if g.GetHealth() == telemetry.Health_HEALTH_OK {
					p += float64(g.GetPowerMw()) / 1000
				}
			}
			power[end] += p
			count[end]++
			if md.Timestamp.UnixNano() > end+int64(grace) {
				lateAtSource++
			}
		}
		if n == 0 || last.After(stopAt) {
			return power, count, lateAtSource
		}
	}
}

// rollupLog collects the site rollups the aggregator publishes.
type rollupLog struct {
	mu  sync.Mutex
	got map[int64]*telemetry.Rollup
}

func collectRollups(t *testing.T, nc *nats.Conn, subject string) *rollupLog {
	t.Helper()
	l := &rollupLog{got: map[int64]*telemetry.Rollup{}}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		r := &telemetry.Rollup{}
		if proto.Unmarshal(m.Data, r) == nil {
			l.mu.Lock()
			l.got[r.GetWindowEndUnixNs()] = r
			l.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

func (l *rollupLog) at(end int64) *telemetry.Rollup {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[end]
}

// The alerts aggregator as its own process, fed by `megawatch loadgen`
// with the demo campus's 6,400 nodes at their real rate through a real
// nats-server, notifying a real Alertmanager:
//
//   - its heartbeat arrives at Alertmanager while it runs;
//   - paused (SIGSTOP) for 5 s: no report is lost or late, the site sums of
//     the windows during the pause equal what was published, the lag metric
//     and the lag alert rise and fall, nothing is falsely paged or resolved;
//   - restarted with GOMAXPROCS=1 beside a CPU-bound neighbour on the same
//     core: again no report lost and the sums equal what was published;
//   - killed: its heartbeat stops at Alertmanager.
func TestProcessPauseStarvationAndHeartbeat(t *testing.T) {
	testenv.Short(t)
	bin := buildMegawatch(t)
	ns := testenv.StartNATSServer(t)
	hook := newReceiver(t)
	am := testenv.StartAlertmanager(t, amHookConfig(hook.srv.URL))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metrics := "http://" + httpAddr + "/metrics"
	topo, _ := filepath.Abs(filepath.Join("..", "configs", "demo-topology.yaml"))
	cf := filepath.Join(t.TempDir(), "alerts.yaml")
	if err := os.WriteFile(cf, []byte(fmt.Sprintf(`
nats: {servers: [%q]}
topology: %q
http_addr: %q
replica: t1
grace: 1s
lag_alert_after: 2s
rules:
  - {name: hall_on, level: hall, domains: [demo/h1], metric: power_mw, power: gpu, threshold: 0.5, severity: warning}
  - {name: hall_over, level: hall, metric: power_mw, power: gpu, of_capacity: 2, severity: critical}
  - {name: hall_coverage_low, level: hall, metric: coverage, threshold: 0.9, for: 2s, severity: warning}
  - {name: site_degraded, level: site, metric: telemetry_degraded, threshold: 0.5, severity: warning}
notifiers:
  alertmanager: {urls: [%q], resend_interval: 2s}
  log: {enabled: false}
  nats: {enabled: false}
`, ns.URL, topo, httpAddr, am.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	lg := testenv.StartProc(t, "loadgen", bin, "loadgen", "--nats", ns.URL, "--nodes", "6400", "--topology", topo, "--rate", "real")
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	rollups := collectRollups(t, nc, telemetry.RollupPrefix+".site.demo")

	// The nodes report before the aggregator starts (else its first
	// windows are rightly degraded: nobody reports yet).
	waitFor(t, 60*time.Second, "loadgen publishing", func() bool {
		st, err := js.Stream(context.Background(), telemetry.StreamPower)
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs >= 2*6400
	})
	agg := testenv.StartProc(t, "alerts", bin, "alerts", "--config", cf, "--log-level", "warn")
	testenv.WaitHTTP("http://"+httpAddr+"/readyz", http.StatusOK, 60*time.Second)
	waitFor(t, 30*time.Second, "the heartbeat at Alertmanager", func() bool {
		as := amActive(t, am.URL, HeartbeatRule)
		return len(as) == 1 && as[0].Labels["replica"] == "t1"
	})
	waitFor(t, 30*time.Second, "hall_on firing at Alertmanager", func() bool { return len(amActive(t, am.URL, "hall_on")) == 1 })
	late := func() float64 { return scrape(metrics, `megawatch_alerts_inputs_total{result="late"}`) }
	accepted := func() float64 { return scrape(metrics, `megawatch_alerts_inputs_total{result="accepted"}`) }
	waitFor(t, 30*time.Second, "reports accepted", func() bool { return accepted() > 6400*3 })

	// Pause for 5 s.
	t.Log("running; pausing the aggregator")
	pid := aggPid(t, agg)
	pauseFrom := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pauseTo := time.Now()
	waitFor(t, 60*time.Second, "the lag to rise and fall", func() bool {
		return scrape(metrics, "megawatch_alerts_lag_max_seconds") >= 3 && scrape(metrics, "megawatch_alerts_lag_seconds") < 1.5
	})
	if l, f := late(), scrape(metrics, `megawatch_alerts_inputs_total{result="future"}`); l != 0 || f != 0 {
		t.Errorf("%v reports counted late and %v future after the pause, want none lost", l, f)
	}
	t.Logf("caught up: lag max %.2f s", scrape(metrics, "megawatch_alerts_lag_max_seconds"))
	if src := checkSums(t, js, rollups, pauseFrom.Truncate(time.Second), pauseTo.Truncate(time.Second), 4); src != 0 {
		t.Logf("%d reports reached the stream after their window's deadline (the publisher was late)", src)
	}
	t.Log("sums checked")
	changes := func(state string) float64 {
		return scrape(metrics, `megawatch_alerts_state_changes_total{rule="`+LagRule+`",state="`+state+`"}`)
	}
	if changes("firing") != 1 || changes("resolved") != 1 {
		t.Errorf("lag alert fired %v and resolved %v times, want 1 and 1", changes("firing"), changes("resolved"))
	}

	// Starved: one core, shared with a busy loop.
	agg.Stop()
	var pin []string
	if p, err := exec.LookPath("taskset"); err == nil && exec.Command(p, "-c", "0", "true").Run() == nil {
		pin = []string{p, "-c", "0"}
	}
	busy := append(append([]string(nil), pin...), "sh", "-c", "while :; do :; done")
	testenv.StartProc(t, "busy", busy[0], busy[1:]...)
	t.Setenv("GOMAXPROCS", "1")
	cmd := append(append([]string(nil), pin...), bin, "alerts", "--config", cf, "--log-level", "warn")
	agg = testenv.StartProc(t, "alerts-starved", cmd[0], cmd[1:]...)
	testenv.WaitHTTP("http://"+httpAddr+"/readyz", http.StatusOK, 60*time.Second)
	waitFor(t, 60*time.Second, "the first windows", func() bool { return accepted() > 6400*3 })
	starveFrom, late0 := time.Now().Truncate(time.Second), late()
	waitFor(t, 60*time.Second, "15 s of starved windows", func() bool { return accepted() > 6400*15 })
	starveTo := time.Now().Add(-3 * time.Second).Truncate(time.Second)
	waitFor(t, 30*time.Second, "the starved windows' rollups", func() bool { return rollups.at(starveTo.Add(2*time.Second).UnixNano()) != nil })
	lateStarved := late() - late0
	src := checkSums(t, js, rollups, starveFrom, starveTo, 8)
	t.Logf("starved (pinned to one core: %v): lag max %.2f s; late %v, late at the source %d", pin != nil, scrape(metrics, "megawatch_alerts_lag_max_seconds"), lateStarved, src)
	if lateStarved > float64(src) {
		t.Errorf("%v reports counted late while starved, but only %d reached the stream after their deadline", lateStarved, src)
	}

	// No false page, no false resolve, all along.
	for _, n := range amNotifications(t, hook) {
		for _, a := range n.Alerts {
			switch name := a.Labels["alertname"]; {
			case name == "hall_on" && a.Status != "firing":
				t.Errorf("hall_on %s: a false resolve", a.Status)
			case name == "hall_over" || name == "hall_coverage_low" || name == "site_degraded":
				t.Errorf("%s %s: a false page (%v)", name, a.Status, a.Annotations)
			}
		}
	}

	// Killed: the heartbeat stops (Alertmanager lets it end 4 resend
	// intervals after the last one).
	agg.Kill()
	waitFor(t, 30*time.Second, "the heartbeat to stop at Alertmanager", func() bool { return len(amActive(t, am.URL, HeartbeatRule)) == 0 })
	lg.Stop()
	if strings.Contains(lg.Output(), "panic") {
		t.Errorf("loadgen: %s", lg.Output())
	}
}

// checkSums compares the site rollups of the windows ending in (from, to]
// with the sums of the reports the stream holds for them; at least min
// windows must have every node's report. It returns how many of the
// reports reached the stream after their window's deadline.
func checkSums(t *testing.T, js jetstream.JetStream, rollups *rollupLog, from, to time.Time, minWindows int) int {
	t.Helper()
	power, count, lateAtSource := windowSums(t, js, from, to, time.Second)
	waitFor(t, 30*time.Second, "the site rollups of the windows", func() bool { return rollups.at(to.UnixNano()) != nil })
	full := 0
	for end, n := range count {
		r := rollups.at(end)
		if r == nil {
			t.Errorf("window %s: no site rollup", time.Unix(0, end).Format(time.TimeOnly))
			continue
		}
		if n != 6400 {
			continue // the publisher thinned this window
		}
		full++
		if r.GetNodesReporting() != 6400 || math.Abs(r.GetPowerW()-power[end]) > 1e-6*power[end] {
			t.Errorf("window %s: site rollup %.0f W from %d nodes, published %.0f W from %d", time.Unix(0, end).Format(time.TimeOnly),
				r.GetPowerW(), r.GetNodesReporting(), power[end], n)
		}
	}
	if full < minWindows {
		t.Errorf("only %d complete windows in %s..%s (of %d), want %d", full, from.Format(time.TimeOnly), to.Format(time.TimeOnly), len(count), minWindows)
	}
	return lateAtSource
}

// aggPid is the process id of a testenv.Proc, from /proc by command line.
func aggPid(t *testing.T, p *testenv.Proc) int {
	t.Helper()
	pid := p.Pid()
	if pid <= 0 {
		t.Fatal("alerts process not running")
	}
	return pid
}
