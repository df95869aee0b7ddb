package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go/jetstream"
)

// runLoadgen publishes the reports of N simulated nodes to NATS: at their
// real rate (one window per node per window length, aligned to the wall
// clock) or as fast as possible for a fixed number of windows.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("loadgen", stderr)
	nf := addNATSFlags(fs, "nats://127.0.0.1:4222")
	ensure := fs.Bool("ensure-streams", true, "create or update the streams first (needs JetStream API rights; the loadgen user of `megawatch nats-accounts --loadgen-user` has none: ingest sets them up)")
	nodes := fs.Int("nodes", 100, "simulated nodes")
	rateMode := fs.String("rate", "real", "real: one report per node per window on the wall clock; max: as fast as possible")
	count := fs.Int("count", 0, "windows per node (0 = until interrupted; required with --rate max)")
	topoPath := fs.String("topology", "", "topology file for node locations (default: embedded configs/topology.yaml); extra nodes get lg-… names")
	model := fs.String("gpu-model", "dgxh100", "simulated node model: dgxh100 or dgxb200")
	simFile := fs.String("sim-config", "", "simulator scenario: a YAML file with the keys of a collector config's sim: section (jobs, faults such as collector_down, node_power, node_power_mix); default: the built-in one with --gpu-model")
	window := fs.Duration("window", time.Second, "window length")
	inflight := fs.Int("inflight", 4096, "async publishes awaiting their ack")
	back := fs.Duration("backfill", 0, "with --rate max: window ends start this far in the past (default count×window)")
	shard := fs.String("shard", "", "I/N: publish only every N-th node starting at I (run N loadgens in parallel for more than one core's worth)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *nodes < 1 {
		return fmt.Errorf("%w: --nodes must be positive", errUsage)
	}
	if *rateMode != "real" && *rateMode != "max" {
		return fmt.Errorf("%w: --rate must be real or max", errUsage)
	}
	if *rateMode == "max" && *count < 1 {
		return fmt.Errorf("%w: --rate max needs --count", errUsage)
	}
	locs, err := loadgenLocations(*topoPath, *nodes)
	if err != nil {
		return err
	}
	if *shard != "" {
		var i, n int
		if _, err := fmt.Sscanf(*shard, "%d/%d", &i, &n); err != nil || n < 1 || i < 0 || i >= n {
			return fmt.Errorf("%w: --shard wants I/N with 0 <= I < N, got %q", errUsage, *shard)
		}
		var mine []telemetry.Location
		for j := i; j < len(locs); j += n {
			mine = append(mine, locs[j])
		}
		locs = mine
	}
	scfg := sim.DefaultConfig()
	scfg.Model = *model
	if *simFile != "" {
		if scfg, err = config.LoadValidated(*simFile, scfg); err != nil {
			return err
		}
	}
	fleet, err := sim.NewFleet(scfg, locs)
	if err != nil {
		return err
	}
	ncfg := natsx.DefaultConfig()
	if err := nf.apply(&ncfg); err != nil {
		return err
	}
	ncfg.Name = "megawatch-loadgen"
	nc, err := nf.connectOnce(ncfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(*inflight))
	if err != nil {
		return err
	}
	if *ensure {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = natsx.EnsureStreams(sctx, js, natsx.DefaultStreamsConfig())
		cancel()
		if err != nil {
			return err
		}
	}
	fp, err := newFleetPublisher(fleet, locs, js, *window, *window/10)
	if err != nil {
		return err
	}
	fp.warn = func(msg string, args ...any) { fmt.Fprintln(stderr, append([]any{"loadgen:", msg}, args...)...) }
	start := time.Now()
	if *rateMode == "max" {
		first := time.Now().Truncate(*window).Add(-time.Duration(*count) * *window)
		if *back > 0 {
			first = time.Now().Truncate(*window).Add(-*back)
		}
		for w := 1; w <= *count && ctx.Err() == nil; w++ {
			if err := fp.publishWindow(first.Add(time.Duration(w) * *window)); err != nil {
				return err
			}
		}
	} else if err := fp.runRealTime(ctx, *count); err != nil {
		return err
	}
	if err := fp.waitAcks(30 * time.Second); err != nil {
		return err
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "published %d reports of %d nodes in %s: %.0f reports/s; %d skipped (publisher behind)", fp.sent, len(locs), el.Round(time.Millisecond), float64(fp.sent)/el.Seconds(), fp.skipped)
	if fp.down > 0 {
		fmt.Fprintf(stdout, "; %d not sent (collector_down)", fp.down)
	}
	fmt.Fprintln(stdout)
	return nil
}

// loadgenLocations takes the first n nodes of the topology and names the
// rest lg-<hall>-<rack>-nNNNNN in generated halls of 18-node racks.
func loadgenLocations(path string, n int) ([]telemetry.Location, error) {
	topo, err := configs.LoadTopology(path)
	if err != nil {
		return nil, err
	}
	var out []telemetry.Location
	for _, nd := range topo.Nodes() {
		if len(out) == n {
			break
		}
		out = append(out, nd.Location)
	}
	for i := 0; len(out) < n; i++ {
		rack := i / 18
		out = append(out, telemetry.Location{Site: "lg", Hall: fmt.Sprintf("lg-h%d", rack/1000), Row: fmt.Sprintf("lg-r%d", rack/40),
			Rack: fmt.Sprintf("lg-k%d", rack), Node: fmt.Sprintf("lg-n%06d", i)})
	}
	return out, nil
}
