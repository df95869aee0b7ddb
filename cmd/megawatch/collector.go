package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/obs"
)

// errNoNVML is what `megawatch collector` says on a host without the driver.
var errNoNVML = errors.New("NVML library not found (libnvidia-ml.so.1): this host has no NVIDIA driver; run with --sim to use the simulated GPUs")

// collectorFlags are the flags of `megawatch collector`; set ones override
// the config file.
type collectorFlags struct {
	config, node, nats, simModel, bufferDir, metricsAddr, logLevel string
	sim                                                            bool
}

func (f *collectorFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.config, "config", "", "config file (default: the built-in defaults, equal to configs/collector.yaml)")
	fs.StringVar(&f.node, "node", "", "this node's name in the topology (default: host name; with --sim: the topology's first node)")
	fs.StringVar(&f.nats, "nats", "", "NATS server URLs, comma-separated (default nats://127.0.0.1:4222)")
	fs.BoolVar(&f.sim, "sim", false, "read simulated GPUs instead of NVML")
	fs.StringVar(&f.simModel, "sim-model", "", "simulated node model with --sim: dgxh100 or dgxb200")
	fs.StringVar(&f.bufferDir, "buffer-dir", "", "keep the offline buffer in this directory (survives restarts)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve /metrics, /healthz, /readyz here (default 127.0.0.1:9401, loopback only; \"\" in the file disables)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
}

// apply puts the flags that were set over cfg.
func (f *collectorFlags) apply(fs *flag.FlagSet, cfg *collector.Config) {
	fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "node":
			cfg.Node = f.node
		case "nats":
			cfg.NATS.Servers = strings.Split(f.nats, ",")
		case "sim-model":
			cfg.Sim.Model = f.simModel
		case "buffer-dir":
			cfg.BufferDir = f.bufferDir
		case "metrics-addr":
			cfg.MetricsAddr = f.metricsAddr
		case "log-level":
			cfg.LogLevel = f.logLevel
		}
	})
}

func runCollector(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("collector", stderr)
	var f collectorFlags
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	cfg := collector.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = collector.LoadConfig(f.config); err != nil {
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

	// NVML first: a host without the driver hears about --sim before
	// anything else.
	var dev nvml.Interface
	if !f.sim {
		lib := nvml.New()
		switch ret := lib.Init(); ret {
		case nvml.SUCCESS:
		case nvml.ERROR_LIBRARY_NOT_FOUND:
			return errNoNVML
		default:
			return fmt.Errorf("nvml init: %w", ret)
		}
		defer lib.Shutdown()
		dev = lib
	}

	node := cfg.Node
	if node == "" && f.sim && cfg.Location == nil {
		if node, err = collector.FirstNode(cfg); err != nil {
			return err
		}
	}
	if node == "" {
		if node, err = cfg.NodeName(); err != nil {
			return err
		}
	}
	loc, err := collector.Locate(cfg, node)
	if err != nil {
		return err
	}

	if f.sim {
		if dev, err = sim.New(cfg.Sim, loc, time.Now); err != nil {
			return fmt.Errorf("simulator: %w", err)
		}
		logger.Info("reading simulated GPUs", "model", cfg.Sim.Model)
	}

	cfg.NATS.Name = fmt.Sprintf("%s %s", cfg.NATS.Name, node)
	nc, err := natsx.Connect(cfg.NATS, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	var opts []collector.Option
	if d, ok := dev.(*sim.Driver); ok {
		if src, ok := d.NodePowerSource(); ok { // the simulated BMC, before node_power.sources
			opts = append(opts, collector.WithNodePowerSource(src, cfg.NodePower.Redfish.PollConfig))
		}
	}
	reg := obs.NewRegistry()
	c, err := collector.New(cfg, dev, loc, nc, logger, reg, opts...)
	if err != nil {
		return err
	}
	addr, err := obs.Serve(ctx, cfg.MetricsAddr, obs.Handler(obs.Options{Registry: reg, Ready: c.Ready, Live: c.Live()}), logger)
	if err != nil {
		return err
	}
	if addr != "" {
		logger.Info("serving metrics", "addr", addr)
	}
	return c.Run(ctx)
}
