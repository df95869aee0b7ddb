package grafana_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/megawatch/megawatch/internal/topology"
)

// pipelineWindows is how many live 1 s windows the real pipeline runs.
const pipelineWindows = 10

// fillPipeline fills influxd the way production does: a simulated fleet
// (sim.Fleet over configs/topology.yaml: 32 DGX H100 nodes) publishes node
// reports to an in-process NATS JetStream, ingest writes them to influxd,
// and alerts aggregates them every window, publishes rollups and alert
// events (which ingest writes too). The fleet runs hot (GPUs throttle) with
// one lost GPU, and a rule that fires at once gives the alert annotations
// something to show. The facility meters of the topology publish meter
// reports every window (one stale); the aggregator's rollups carry the
// facility figures (metered, node, unaccounted) computed from them.
func fillPipeline(t *testing.T, d *testenv.Influxd, db string) {
	t.Helper()
	if tdb := shippedDB(t); tdb != db {
		t.Fatalf("configs/ingest.yaml writes to database %q, the datasource reads %q", tdb, db)
	}
	fillPipelineTo(t, d, db, shippedTarget(t, d.URL))
}

// fillPipelineTo is fillPipeline with ingest writing through target tg.
func fillPipelineTo(t *testing.T, d *testenv.Influxd, db string, tg ingest.Target) {
	t.Helper()
	topo, err := topology.Load("../topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.URL())
	js := natstest.JetStream(t, nc)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)

	icfg := ingest.DefaultConfig()
	icfg.NATS.Servers = []string{srv.URL()}
	icfg.BatchWait = 200 * time.Millisecond
	icfg.MetricsAddr = ""
	icfg.TopologyFile = "../topology.yaml"
	// fillPipeline: the shipped target (configs/ingest.yaml) with its
	// measurement → retention policy mapping, pointed at this influxd;
	// ingest creates the database and the policies as an operator's
	// --ensure-db does.
	icfg.Targets = []ingest.Target{tg}
	icfg.EnsureDB = true
	in, err := ingest.New(icfg, natstest.Connect(t, srv.URL()), logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("ingest.New: %v", err)
	}
	wg.Go(func() {
		if err := in.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("ingest: %v", err)
		}
	})

	acfg := alerts.DefaultConfig()
	acfg.NATS.Servers = []string{srv.URL()}
	acfg.HTTPAddr = ""
	acfg.AnalysisWindow = 4 * time.Second // ramp, swing and oscillation within the run
	acfg.Notifiers.Log.Enabled = false
	low := 0.001
	acfg.Rules = []rules.Rule{{Name: "hall_power_test", Level: "hall", Metric: "power_mw", Threshold: &low, Severity: "critical",
		Annotations: map[string]string{"summary": "{{ .Domain }} draws {{ mw .Value }}"}}}
	eng, err := alerts.New(acfg, topo, natstest.Connect(t, srv.URL()), logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("alerts.New: %v", err)
	}
	wg.Go(func() {
		if err := eng.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("alerts: %v", err)
		}
	})

	scfg := sim.DefaultConfig()
	scfg.SlowdownC = 45 // hot: the GPUs throttle within seconds
	scfg.ThermalTau = 2 * time.Second
	scfg.Faults = []sim.Fault{{Node: topo.Nodes()[1].Name, Kind: sim.FaultLost, GPU: 7}}
	locs := make([]telemetry.Location, 0, topo.NumNodes())
	for _, n := range topo.Nodes() {
		locs = append(locs, n.Location)
	}
	fleet, err := sim.NewFleet(scfg, locs)
	if err != nil {
		t.Fatal(err)
	}
	var rep telemetry.NodeReport
	var liveStart time.Time
	for w := range pipelineWindows {
		end := time.Now().Truncate(time.Second).Add(time.Second)
		time.Sleep(time.Until(end))
		if w == 0 {
			liveStart = end
		}
		gpuW, nodeW := map[string]float64{}, map[string]float64{}
		for i, loc := range locs {
			fleet.Report(&rep, i, end, time.Second, 100*time.Millisecond)
			domainPower(gpuW, nodeW, &rep)
			b, err := proto.Marshal(&rep)
			if err != nil {
				t.Fatal(err)
			}
			subj, err := telemetry.PowerSubject(loc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.PublishAsync(subj, b, jetstream.WithMsgID(telemetry.MsgID(loc.Node, end.UnixNano()))); err != nil {
				t.Fatal(err)
			}
		}
		// The facility meters of configs/topology.yaml, as `megawatch
		// meters` publishes them (one is stale: its PDU does not answer).
		publishMeters(t, js, topo, end, nodeW, uint64(w+1))
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("node reports not acknowledged")
	}
	// Wait for the last window's rollups and the alert events in influxd.
	deadline := time.Now().Add(30 * time.Second)
	for _, q := range []string{`SELECT count("power_mw") FROM ` + shippedFrom(t, tg, "rollup") + ` WHERE "level" = 'site'`,
		// the aggregator's facility figures from the meter reports
		fmt.Sprintf(`SELECT count("metered_mw") FROM %s WHERE "level" = 'hall' AND time >= %d`, shippedFrom(t, tg, "rollup"), liveStart.UnixNano()),
		fmt.Sprintf(`SELECT count("unaccounted_mw") FROM %s WHERE "level" = 'row' AND time >= %d`, shippedFrom(t, tg, "rollup"), liveStart.UnixNano()),
		`SELECT count("facility_mw") FROM ` + shippedFrom(t, tg, "rollup") + ` WHERE "level" = 'site'`,
		`SELECT count("power_w") FROM ` + shippedFrom(t, tg, "meter"), `SELECT count("stale") FROM ` + shippedFrom(t, tg, "meter") + ` WHERE "report" = 'stale'`,
		`SELECT count("state") FROM ` + shippedFrom(t, tg, "alert"), `SELECT count("temp_c") FROM ` + shippedFrom(t, tg, "gpu")} {
		for d.Count(t, db, q) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("pipeline wrote nothing for %s", q)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	time.Sleep(2 * icfg.BatchWait) // the last batches
}
