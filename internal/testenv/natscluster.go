package testenv

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of nats-server processes on
// 127.0.0.1 (as docs/operations.md deploys it: three servers, R3 streams),
// each with its own store, killable and restartable one by one.
type NATSCluster struct {
	Servers []*NATSServer
	Names   []string // server_name of each: n0, n1, ... (a Conf must use these)
}

// ClusterOptions tune StartNATSCluster.
type ClusterOptions struct {
	// SyncAlways sets jetstream sync_interval: always (fsync every write)
	// instead of the default (every 2 minutes).
	SyncAlways bool
	// Conf, when set, renders server i's config (e.g. from an example
	// file): its client port, cluster port, every server's route URL and
	// its store directory. Nil uses a minimal config.
	Conf func(i, port, clusterPort int, routes []string, storeDir string, syncAlways bool) string
}

// StartNATSCluster runs n nats-server processes routed to each other and
// waits until JetStream has a meta leader.
func StartNATSCluster(t testing.TB, n int, opt ClusterOptions) *NATSCluster {
	t.Helper()
	Short(t)
	bin := Binary(t, "nats-server")
	ports, cports := make([]int, n), make([]int, n)
	for i := range n {
		ports[i], cports[i] = FreePort(t), FreePort(t)
	}
	var routes []string
	for _, p := range cports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	c := &NATSCluster{}
	for i := range n {
		dir := t.TempDir()
		sync := ""
		if opt.SyncAlways {
			sync = "\n  sync_interval: always"
		}
		var conf string
		if opt.Conf != nil {
			conf = opt.Conf(i, ports[i], cports[i], routes, dir, opt.SyncAlways)
		} else {
			conf = fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:%d
jetstream {
  store_dir: %q%s
}
cluster {
  name: megawatch
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, i, ports[i], dir, sync, cports[i], strings.Join(routes, ", "))
		}
		cf := filepath.Join(dir, "nats.conf")
		writeFile(t, cf, conf)
		s := &NATSServer{Proc: StartProc(t, fmt.Sprintf("nats-server-n%d", i), bin, "-c", cf),
			URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), Port: ports[i], StoreDir: dir}
		c.Servers = append(c.Servers, s)
		c.Names = append(c.Names, fmt.Sprintf("n%d", i))
	}
	for _, s := range c.Servers {
		s.WaitReady(t)
	}
	c.WaitJetStream(t)
	return c
}

// URLs is every server's URL, comma-separated (what clients connect to).
func (c *NATSCluster) URLs() string {
	var u []string
	for _, s := range c.Servers {
		u = append(u, s.URL)
	}
	return strings.Join(u, ",")
}

// WaitJetStream waits until the cluster answers JetStream requests.
func (c *NATSCluster) WaitJetStream(t testing.TB) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("jetstream cluster not ready: %v\n%s", err, c.Servers[0].Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Index returns the index of the server named name (-1 if none).
func (c *NATSCluster) Index(name string) int {
	for i, n := range c.Names {
		if n == name {
			return i
		}
	}
	return -1
}
