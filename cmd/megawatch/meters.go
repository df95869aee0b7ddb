package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/obs"
	"github.com/megawatch/megawatch/meters"
)

type metersFlags struct {
	config, topology, nats, scope, poller, metricsAddr, logLevel string
	simModel                                                     string
	probe, sim                                                   bool
}

func (f *metersFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "config file (default: the built-in defaults, equal to configs/meters.yaml)")
	fs.StringVar(&f.topology, "topology", "", "topology file with the meter definitions (default: the embedded configs/topology.yaml)")
	fs.StringVar(&f.nats, "nats", "", "NATS server URLs, comma-separated (default nats://127.0.0.1:4222)")
	fs.StringVar(&f.scope, "scope", "", "poll only the meters of this domain's subtree, e.g. dc1.h1")
	fs.StringVar(&f.poller, "poller", "", "this poller's name in reports (default: host name)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz, /readyz here (default 127.0.0.1:9403)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fs.BoolVar(&f.sim, "sim", false, "simulated meters: read the simulated nodes of the config's sim: model (the topology's meters, or a PDU per rack and a switchgear meter per hall when it has none) instead of SNMP/Modbus; see docs/meters.md")
	fs.StringVar(&f.simModel, "sim-model", "", "with --sim: the simulated nodes' model, dgxh100 or dgxb200 (default: the config's sim.model)")
	fs.BoolVar(&f.probe, "probe", false, "read every meter once, print the readings and exit (nothing is published; exit status 1 if any failed)")
}

func (f *metersFlags) apply(fs *flag.FlagSet, cfg *meters.Config) {
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "topology":
			cfg.TopologyFile = f.topology
		case "nats":
			cfg.NATS.Servers = strings.Split(f.nats, ",")
		case "scope":
			cfg.Scope = f.scope
		case "poller":
			cfg.Poller = f.poller
		case "metrics-addr":
			cfg.MetricsAddr = f.metricsAddr
		case "log-level":
			cfg.LogLevel = f.logLevel
		case "sim-model":
			cfg.Sim.Model = f.simModel
		}
	})
}

func runMeters(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("meters", stderr)
	var f metersFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg := meters.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = meters.LoadConfig(f.config); err != nil {
			return err
		}
	}
	f.apply(fs, &cfg)
	cfg.Version = Version()
	if err := cfg.Validate(); err != nil {
		return err
	}
	logger, err := newLogger(stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	topo, err := configs.LoadTopology(cfg.TopologyFile)
	if err != nil {
		return err
	}
	newPoller := meters.New
	if f.sim {
		newPoller = meters.NewSim
	} else if f.simModel != "" {
		return fmt.Errorf("%w: --sim-model needs --sim", errUsage)
	}
	if f.probe {
		p, err := newPoller(cfg, topo, nil, logger, nil)
		if err != nil {
			return err
		}
		defer p.Close()
		if failed := meters.WriteProbe(stdout, p.Probe(ctx)); failed > 0 {
			return fmt.Errorf("%d of %d meters could not be read", failed, p.Meters())
		}
		return nil
	}
	cfg.NATS.Name = fmt.Sprintf("%s %s", cfg.NATS.Name, cfg.PollerName())
	nc, err := natsx.Connect(cfg.NATS, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	reg := obs.NewRegistry()
	p, err := newPoller(cfg, topo, js, logger, reg)
	if err != nil {
		return err
	}
	addr, err := obs.Serve(ctx, cfg.MetricsAddr, obs.Mux(reg, p.Ready), logger)
	if err != nil {
		return err
	}
	if addr != "" {
		logger.Info("serving metrics", "addr", addr)
	}
	return p.Run(ctx)
}
