package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/ingest"
)

// runCheckInflux reads each InfluxDB target's series limits and compares
// them with what the topology will write.
func runCheckInflux(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check-influx", stderr)
	cfgPath := fs.String("config", "", "ingest YAML config (configs/ingest.yaml); defaults when empty")
	topoPath := fs.String("topology", "", "topology file (default: the config's topology_file)")
	gpus := fs.Int("gpus-per-node", ingest.DefaultGPUsPerNode, "GPUs per node")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg := ingest.DefaultConfig()
	if *cfgPath != "" {
		var err error
		if cfg, err = ingest.LoadConfig(*cfgPath); err != nil {
			return err
		}
	}
	if *topoPath == "" {
		*topoPath = cfg.TopologyFile
	}
	topo, err := configs.LoadTopology(*topoPath)
	if err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	exp := ingest.ExpectedSeries(topo, *gpus)
	fmt.Fprintf(stdout, "topology: %d nodes, %d domains; expected series per database: gpu %d, node %d, rollup %d, meter %d (total %d); node tag values %d\n",
		exp.Nodes, exp.Domains, exp.GPUSeries, exp.NodeSeries, exp.RollupSeries, exp.MeterSeries, exp.Total(), exp.NodeTagValues)
	var warned bool
	for _, t := range cfg.Targets {
		if t.URL == "" {
			continue
		}
		l, err := ingest.ServerLimits(ctx, t, cfg)
		if err != nil {
			return fmt.Errorf("target %s: %w", t.Name, err)
		}
		if !l.Known {
			fmt.Fprintf(stdout, "target %s: InfluxDB %s does not report series limits (2.x/3.x: see docs/ingest.md, Scale limits)\n", t.Name, l.Version)
			continue
		}
		fmt.Fprintf(stdout, "target %s: InfluxDB %s: max-series-per-database %d, max-values-per-tag %d (0 = unlimited)\n", t.Name, l.Version, l.MaxSeriesPerDatabase, l.MaxValuesPerTag)
		for _, w := range l.Warnings(exp, t.Name) {
			fmt.Fprintln(stdout, "WARNING:", w)
			warned = true
		}
	}
	if warned {
		return errors.New("check-influx: the topology exceeds a server limit (see the warnings)")
	}
	return nil
}
