package ingest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// bufferedPublisher stands in for the collectors: each report is kept in
// a buffer until JetStream acks it (retried with its Msg-Id, so a retry of
// a stored report is a duplicate, not a second copy), oldest first.
type bufferedPublisher struct {
	js      jetstream.JetStream
	acked   atomic.Int64
	retries atomic.Int64
}

func (p *bufferedPublisher) publish(ctx context.Context, r *telemetry.NodeReport) error {
	subj, _ := telemetry.PowerSubject(telemetry.ReportLocation(r))
	data, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(subj)
	msg.Data = data
	msg.Header.Set(telemetry.HeaderMsgID, telemetry.MsgID(r.Node, r.WindowEndUnixNs))
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := p.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			p.acked.Add(1)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		p.retries.Add(1)
		time.Sleep(100 * time.Millisecond)
	}
}

// clusterStreams creates megawatch's streams with 3 replicas.
func clusterStreams(t *testing.T, js jetstream.JetStream) natsx.StreamsConfig {
	t.Helper()
	sc := natsx.DefaultStreamsConfig()
	sc.Replicas = 3
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := natsx.EnsureStreams(ctx, js, sc)
		cancel()
		if err == nil {
			return sc
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterNodeConf renders configs/nats/cluster-node.conf for server i of
// a local cluster (ports, store, routes, server name n<i>).
func clusterNodeConf(t testing.TB) func(i, port, cport int, routes []string, dir string, syncAlways bool) string {
	src, err := os.ReadFile("../configs/nats/cluster-node.conf")
	if err != nil {
		t.Fatal(err)
	}
	return func(i, port, cport int, routes []string, dir string, syncAlways bool) string {
		r := []string{
			"megawatch-nats-1", fmt.Sprintf("n%d", i),
			"0.0.0.0:4222", fmt.Sprintf("127.0.0.1:%d", port),
			"http: 127.0.0.1:8222", "",
			`"/var/lib/nats"`, fmt.Sprintf("%q", dir),
			"max_memory_store: 8GB", "max_memory_store: 256MB",
			"max_file_store: 4TB", "max_file_store: 4GB",
			"0.0.0.0:6222", fmt.Sprintf("127.0.0.1:%d", cport),
		}
		for k := range 3 {
			r = append(r, fmt.Sprintf("nats-route://nats-%d.megawatch.internal:6222", k+1), routes[k])
		}
		if syncAlways {
			r = append(r, "# sync_interval: always", "sync_interval: always")
		}
		out := string(src)
		for k := 0; k < len(r); k += 2 {
			if !strings.Contains(out, r[k]) {
				t.Fatalf("cluster-node.conf no longer contains %q: update the test rendering", r[k])
			}
			out = strings.ReplaceAll(out, r[k], r[k+1])
		}
		return out
	}
}

// streamLeader is the server name leading stream.
func streamLeader(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(ctx)
		}
		cancel()
		if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
			return info.Cluster.Leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader for %s: %v", stream, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exactValues checks that InfluxDB holds every point of s once with its
// value: counts and the sum of every GPU's power (testReport's values).
func (s stream) exactValues(t testing.TB, influx *testenv.Influxd, db string, timeout time.Duration) {
	t.Helper()
	s.exact(t, influx, db, timeout)
	var want float64
	for seq := 1; seq <= s.windows; seq++ {
		for g := range 8 {
			want += float64(s.nodes) * float64(500_000+1000*g+seq%1000) / 1000
		}
	}
	rows := influx.Query(t, db, `SELECT sum(power_w) FROM gpu`)
	if len(rows) == 0 || len(rows[0].Values) == 0 {
		t.Fatal("no gpu power sum")
	}
	got, _ := rows[0].Values[0][1].(interface{ Float64() (float64, error) }).Float64()
	if d := got - want; d > 1e-3*float64(s.nodes*s.windows) || d < -1e-3*float64(s.nodes*s.windows) {
		t.Errorf("sum of gpu power %.3f W, want %.3f W", got, want)
	}
}

// runClusterFault publishes s through a 3-node R3 cluster while fault()
// runs at window 15 and heal() at window 30, with two ingest processes
// connected to all three servers; then every acked report must be in
// InfluxDB once, with its values, and the publishers' buffers empty.
func runClusterFault(t *testing.T, fault func(c *testenv.NATSCluster, js jetstream.JetStream) (heal func())) {
	cluster := testenv.StartNATSCluster(t, 3, testenv.ClusterOptions{Conf: clusterNodeConf(t)})
	nc := connect(t, cluster.URLs())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	sc := clusterStreams(t, js)
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	cfg := testConfig(influx.URL, "mw")
	cfg.Streams = sc
	startIngest(t, cfg, cluster.URLs(), nil)
	startIngest(t, cfg, cluster.URLs(), nil)
	s := newStream(20, 45)
	pub := &bufferedPublisher{js: js}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var heal func()
	for seq := 1; seq <= s.windows; seq++ {
		switch seq {
		case 15:
			heal = fault(cluster, js)
		case 30:
			heal()
		}
		var wg sync.WaitGroup // the nodes publish concurrently, each from its own buffer
		for i := range s.nodes {
			wg.Go(func() {
				if err := pub.publish(ctx, testReport(testLoc(i), uint64(seq), s.base.Add(time.Duration(seq)*time.Second), 8)); err != nil {
					t.Errorf("publish: %v", err)
				}
			})
		}
		wg.Wait()
		time.Sleep(20 * time.Millisecond)
	}
	if n := pub.acked.Load(); n != int64(s.nodes*s.windows) {
		t.Fatalf("buffers not drained: %d of %d reports acked", n, s.nodes*s.windows)
	}
	t.Logf("%d publish retries during the fault", pub.retries.Load())
	s.exactValues(t, influx, "mw", 90*time.Second)
}

// TestClusterFollowerKilled: a follower of MEGAWATCH_POWER is SIGKILLed
// mid-stream and restarted on its store 15 windows later.
func TestClusterFollowerKilled(t *testing.T) {
	runClusterFault(t, func(c *testenv.NATSCluster, js jetstream.JetStream) func() {
		leader := streamLeader(t, js, telemetry.StreamPower)
		f := (c.Index(leader) + 1) % len(c.Servers)
		c.Servers[f].Kill()
		return func() { c.Servers[f].Restart(t) }
	})
}

// TestClusterLeaderKilled: the stream leader of MEGAWATCH_POWER is
// SIGKILLed mid-stream (a new leader is elected) and restarted later.
func TestClusterLeaderKilled(t *testing.T) {
	runClusterFault(t, func(c *testenv.NATSCluster, js jetstream.JetStream) func() {
		l := c.Index(streamLeader(t, js, telemetry.StreamPower))
		c.Servers[l].Kill()
		return func() { c.Servers[l].Restart(t) }
	})
}

// BenchmarkClusterSync publishes 8-GPU reports to an R3 stream on a
// 3-node cluster with the default sync_interval (fsync every 2 min) and
// with sync_interval: always, in one run: compare reports/s.
func BenchmarkClusterSync(b *testing.B) {
	for _, always := range []bool{false, true} {
		name := "sync=default"
		if always {
			name = "sync=always"
		}
		b.Run(name, func(b *testing.B) {
			cluster := testenv.StartNATSCluster(b, 3, testenv.ClusterOptions{SyncAlways: always, Conf: clusterNodeConf(b)})
			nc, err := nats.Connect(cluster.URLs())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			sc := natsx.DefaultStreamsConfig()
			sc.Replicas = 3
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := natsx.EnsureStreams(ctx, js, sc); err != nil {
				b.Fatal(err)
			}
			data, _ := proto.Marshal(testReport(testLoc(1), 1, time.Now(), 8))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				// Collectors publish asynchronously; 256 in flight.
				msg := nats.NewMsg(mustPowerSubject(testLoc(i % 1000)))
				msg.Data = data
				msg.Header.Set(telemetry.HeaderMsgID, fmt.Sprintf("n%d:%d", i%1000, i))
				if _, err := js.PublishMsgAsync(msg); err != nil {
					b.Fatal(err)
				}
				i++
				if i%256 == 0 {
					select {
					case <-js.PublishAsyncComplete():
					case <-time.After(30 * time.Second):
						b.Fatal("publish acks timed out")
					}
				}
			}
			<-js.PublishAsyncComplete()
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "reports/s")
		})
	}
}

// TestExactlyOnceRestarts: a known set published while ingest is stopped
// and started again (graceful) and influxd is SIGKILLed and restarted on
// its data; every point is counted back once, with its value.
func TestExactlyOnceRestarts(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.CreateDB(t, "mw")
	ns, js := natsProcess(t)
	cfg := testConfig(influx.URL, "mw")
	_, stop, _ := startIngest(t, cfg, ns.URL, nil)
	s := newStream(30, 40)
	s.publish(t, js, 20*time.Millisecond, func(seq int) {
		switch seq {
		case 10:
			stop()
			startIngest(t, cfg, ns.URL, nil)
		case 20:
			influx.Kill()
			time.Sleep(2 * time.Second) // writes fail and are retried meanwhile
		case 25:
			influx.Restart(t)
		}
	})
	s.exactValues(t, influx, "mw", 90*time.Second)
}
