package ingest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// Throughput NATS → InfluxDB, all in one run against one real influxd:
//
//	ceiling:   the same lines pre-encoded, 4 concurrent HTTP writers, 5,000-line gzip-1 batches
//	megawatch: an Ingester consuming the reports from a nats-server process
//	telegraf:  Telegraf 1.37.2 (nats_consumer → influxdb_v2) fed the same lines on a JetStream subject
//
// Each phase is timed to the last accepted write (influxd's pointsWrittenOK),
// then the count is verified once. BENCH_NODES/BENCH_WINDOWS resize it
// (default 1,000 × 125 = 1M gpu points + 125k node points). Run with
// bench/throughput.sh; not part of CI.
func BenchmarkThroughput(b *testing.B) {
	nodes, windows := envInt("BENCH_NODES", 1000), envInt("BENCH_WINDOWS", 125)
	influx := testenv.StartInfluxd(b)
	ns := testenv.StartNATSServer(b)
	nc := connect(b, ns.URL)
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	ensureStreams(b, js)

	// The reports of a simulated fleet, and their lines as ingest encodes them.
	locs := fleetLocs(nodes)
	fleet := newFleet(b, locs)
	base := time.Now().Truncate(time.Second).Add(-time.Duration(windows+60) * time.Second)
	var payloads [][]byte // line protocol per report
	var rep telemetry.NodeReport
	enc := newLPEncoder(defaultLevels)
	var lines int64
	for w := 1; w <= windows; w++ {
		for i := range locs {
			fleet.Report(&rep, i, base.Add(time.Duration(w)*time.Second), time.Second, 100*time.Millisecond)
			data, _ := proto.Marshal(&rep)
			subj, _ := telemetry.PowerSubject(locs[i])
			msg := nats.NewMsg(subj)
			msg.Data = data
			msg.Header.Set(telemetry.HeaderMsgID, telemetry.MsgID(rep.Node, rep.WindowEndUnixNs))
			if _, err := js.PublishMsgAsync(msg); err != nil {
				b.Fatal(err)
			}
			enc.reset(nil)
			n, err := enc.report(&rep, true)
			if err != nil {
				b.Fatal(err)
			}
			lines += int64(n)
			payloads = append(payloads, append([]byte(nil), enc.buf()...))
		}
	}
	<-js.PublishAsyncComplete()
	b.Logf("%d reports, %d lines (%d gpu points)", len(payloads), lines, int64(nodes*windows*8))
	srv := serverCPU{influxd: pidWith(influx.Dir), nats: pidWith(ns.StoreDir)}

	telegraf := os.Getenv("TELEGRAF")
	if telegraf == "" {
		telegraf, _ = testenv.LookPath("telegraf")
	}
	var tgConf string
	if telegraf != "" {
		tgConf = setupTelegraf(b, nc, ns.URL, influx.URL, payloads)
	} else {
		b.Logf("telegraf not found: set TELEGRAF=/path/to/telegraf (see bench/throughput.sh)")
	}
	// BENCH_ROUNDS (3) rounds alternate the three writers against the same
	// influxd (a fresh database each) so that a busy neighbour slows them
	// alike; `benchstat -ignore /round` summarises them.
	//
	// Each phase starts once influxd and nats-server are idle (the previous
	// phase's compactions done), and the order rotates from round to round
	// (ceiling first, then megawatch first, then telegraf first).
	var phases []phase
	phases = append(phases, phase{"ceiling", func(b *testing.B, round int) {
		db := fmt.Sprintf("ceiling_%d", round)
		influx.CreateDB(b, db)
		for b.Loop() {
			settle(b, srv)
			i0, n0 := srv.read()
			cpu0 := selfCPU()
			el := timeToWritten(b, influx, lines, func() {
				directWrite(b, influx.URL+"/api/v2/write?bucket="+db+"/autogen&precision=ns", payloads, 4, 5000, 1)
			})
			report(b, lines, el, selfCPU()-cpu0, srv, i0, n0)
		}
		verify(b, influx, db, lines)
	}})
	phases = append(phases, phase{"megawatch", func(b *testing.B, round int) {
		db := fmt.Sprintf("megawatch_%d", round)
		influx.CreateDB(b, db)
		for b.Loop() {
			cfg := testConfig(influx.URL, db)
			cfg.Consumer = fmt.Sprintf("bench_%d", round) // a fresh durable reads the stream from the start
			// batch_wait like Telegraf's flush_interval: the last partial batches go out at once.
			cfg.Workers, cfg.BatchWait, cfg.Rollups, cfg.AckWait = envInt("BENCH_WORKERS", DefaultConfig().Workers), 100*time.Millisecond, false, time.Minute
			if f := os.Getenv("BENCH_CPUPROFILE"); f != "" && round == 0 {
				pf, _ := os.Create(f)
				pprof.StartCPUProfile(pf)
				defer pprof.StopCPUProfile()
			}
			settle(b, srv)
			i0, n0 := srv.read()
			cpu0 := selfCPU()
			var stop func()
			var ing *Ingester
			var logs io.Writer
			if os.Getenv("BENCH_LOG") != "" {
				logs = os.Stderr
			}
			el := timeToWritten(b, influx, lines, func() { ing, stop, _ = startIngest(b, cfg, ns.URL, logs) })
			cpu := selfCPU() - cpu0
			var m dto.Metric
			_ = ing.m.latency.WithLabelValues("t").(prometheus.Histogram).Write(&m)
			b.Logf("writes %d, mean latency %.1f ms", m.Histogram.GetSampleCount(), 1000*m.Histogram.GetSampleSum()/float64(max(1, m.Histogram.GetSampleCount())))
			stop()
			report(b, lines, el, cpu, srv, i0, n0)
		}
		verify(b, influx, db, lines)
	}})
	if telegraf != "" {
		phases = append(phases, phase{"telegraf", func(b *testing.B, round int) {
			db := fmt.Sprintf("telegraf_%d", round)
			influx.CreateDB(b, db)
			resetTelegrafConsumer(b, nc)
			for b.Loop() {
				cmd := exec.Command(telegraf, "--config", tgConf)
				cmd.Env = append(os.Environ(), "TG_BUCKET="+db+"/autogen")
				var out strings.Builder
				cmd.Stdout, cmd.Stderr = &out, &out
				settle(b, srv)
				i0, n0 := srv.read()
				el := timeToWritten(b, influx, lines, func() {
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
				})
				cpu := statCPU(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				report(b, lines, el, cpu, srv, i0, n0)
			}
			verify(b, influx, db, lines)
		}})
	}
	for round := range envInt("BENCH_ROUNDS", 3) {
		b.Run(fmt.Sprintf("round=%d", round), func(b *testing.B) {
			for k := range phases {
				p := phases[(k+round)%len(phases)]
				b.Run("writer="+p.name, func(b *testing.B) { p.run(b, round) })
			}
		})
	}
}

// phase is one writer of BenchmarkThroughput.
type phase struct {
	name string
	run  func(b *testing.B, round int)
}

// settle waits (up to a minute) until influxd and nats-server together use
// under 5% of a core over half a second, so that no phase pays for the
// previous one's compactions.
func settle(b *testing.B, srv serverCPU) {
	b.Helper()
	t0 := time.Now()
	for time.Since(t0) < time.Minute {
		i0, n0 := srv.read()
		time.Sleep(500 * time.Millisecond)
		i1, n1 := srv.read()
		if (i1-i0)+(n1-n0) < 25*time.Millisecond {
			break
		}
	}
	b.Logf("servers idle after %.1f s", time.Since(t0).Seconds())
}

// setupTelegraf publishes the same lines on a JetStream subject (Telegraf's
// native format) and writes its config: best settings for throughput.
func setupTelegraf(b *testing.B, nc *nats.Conn, natsURL, influxURL string, payloads [][]byte) string {
	js2, _ := nc.JetStream(nats.PublishAsyncMaxPending(4096))
	if _, err := js2.AddStream(&nats.StreamConfig{Name: "BENCH_LP", Subjects: []string{"bench.lp"}, Storage: nats.FileStorage}); err != nil {
		b.Fatal(err)
	}
	for _, p := range payloads {
		if _, err := js2.PublishAsync("bench.lp", p); err != nil {
			b.Fatal(err)
		}
	}
	<-js2.PublishAsyncComplete()
	conf := filepath.Join(b.TempDir(), "telegraf.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`[agent]
  interval = "10s"
  flush_interval = "100ms"
  metric_batch_size = 5000
  metric_buffer_limit = 200000
  omit_hostname = true
  quiet = true
[[inputs.nats_consumer]]
  servers = [%q]
  jetstream_subjects = ["bench.lp"]
  queue_group = "telegraf_consumers"
  max_undelivered_messages = 10000
  data_format = "influx"
  tagexclude = ["subject"]
[[outputs.influxdb_v2]]
  urls = [%q]
  bucket = "${TG_BUCKET}"
  organization = ""
  token = ""
  content_encoding = "gzip"
  concurrent_writes = 4
`, natsURL, influxURL)), 0o600)
	if err != nil {
		b.Fatal(err)
	}
	return conf
}

// resetTelegrafConsumer (re)creates the durable Telegraf binds to (queue
// group "telegraf_consumers"), with max_ack_pending 10000: the server
// default of 1000 stalls it. A new one delivers the stream from the start.
func resetTelegrafConsumer(b *testing.B, nc *nats.Conn) {
	js2, _ := nc.JetStream()
	_ = js2.DeleteConsumer("BENCH_LP", "telegraf_consumers")
	if _, err := js2.AddConsumer("BENCH_LP", &nats.ConsumerConfig{Durable: "telegraf_consumers", DeliverSubject: nats.NewInbox(), DeliverGroup: "telegraf_consumers",
		AckPolicy: nats.AckExplicitPolicy, MaxAckPending: 10000, AckWait: time.Minute, FilterSubject: "bench.lp"}); err != nil {
		b.Fatal(err)
	}
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

func report(b *testing.B, lines int64, el, cpu time.Duration, srv serverCPU, i0, n0 time.Duration) {
	i1, n1 := srv.read()
	b.ReportMetric(float64((i1-i0).Microseconds())/float64(lines), "influxd-µs/point")
	b.ReportMetric(float64((n1-n0).Microseconds())/float64(lines), "nats-µs/point")
	b.ReportMetric(float64(lines)/el.Seconds(), "points/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(lines), "cpu-µs/point")
	b.ReportMetric(el.Seconds(), "s")
	b.ReportMetric(0, "ns/op")
}

// timeToWritten runs start and returns the time until influxd has accepted
// `lines` more points (polling /debug/vars, not count() queries).
func timeToWritten(b *testing.B, influx *testenv.Influxd, lines int64, start func()) time.Duration {
	b.Helper()
	before, err := influx.PointsWrittenOK()
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	start()
	last, lastAt := before, time.Now()
	for {
		n, err := influx.PointsWrittenOK()
		if err == nil && n != last {
			last, lastAt = n, time.Now()
		}
		if last-before >= lines {
			return lastAt.Sub(t0)
		}
		if time.Since(lastAt) > 60*time.Second {
			b.Fatalf("stalled at %d of %d points", last-before, lines)
		}
		// /debug/vars costs influxd (and us) real CPU: poll every 250 ms,
		// and every 10 ms only for the last half second at the current rate.
		wait := 250 * time.Millisecond
		if done := float64(last - before); done > 0 {
			rate := done / time.Since(t0).Seconds()
			if float64(lines)-done < rate/2 {
				wait = 10 * time.Millisecond
			}
		}
		time.Sleep(wait)
	}
}

func verify(b *testing.B, influx *testenv.Influxd, db string, lines int64) {
	b.Helper()
	n := influx.Count(b, db, `SELECT count(gpus) FROM node`) + influx.Count(b, db, `SELECT count(healthy) FROM gpu`)
	if n != lines {
		b.Errorf("%s holds %d points, want %d", db, n, lines)
	}
}

// directWrite posts the payloads with `writers` concurrent HTTP writers in
// batches of batchLines lines, gzip at level.
func directWrite(b *testing.B, url string, payloads [][]byte, writers, batchLines, level int) {
	work := make(chan []byte, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			var buf strings.Builder
			zw, _ := gzip.NewWriterLevel(nil, level)
			for body := range work {
				buf.Reset()
				zw.Reset(&buf)
				zw.Write(body)
				zw.Close()
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(buf.String()))
				req.Header.Set("Content-Encoding", "gzip")
				resp, err := http.DefaultClient.Do(req)
				if err != nil || resp.StatusCode != http.StatusNoContent {
					b.Errorf("direct write: %v %v", err, resp)
					return
				}
				resp.Body.Close()
			}
		})
	}
	var batch []byte
	n := 0
	for _, p := range payloads {
		lines := strings.Count(string(p), "\n")
		if n+lines > batchLines && n > 0 {
			work <- batch
			batch, n = nil, 0
		}
		batch = append(batch, p...)
		n += lines
	}
	if n > 0 {
		work <- batch
	}
	close(work)
	wg.Wait()
}

// pidWith finds the process whose command line contains arg (the servers
// started by testenv), or 0.
func pidWith(arg string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if strings.Contains(string(b), arg) && pid != os.Getpid() {
			return pid
		}
	}
	return 0
}

// serverCPU is the CPU time of influxd and nats-server so far.
type serverCPU struct{ influxd, nats int }

func (s serverCPU) read() (time.Duration, time.Duration) {
	return statCPU(fmt.Sprintf("/proc/%d/stat", s.influxd)), statCPU(fmt.Sprintf("/proc/%d/stat", s.nats))
}

// selfCPU is this process's user+system CPU time from /proc.
func selfCPU() time.Duration { return statCPU("/proc/self/stat") }

func statCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}
