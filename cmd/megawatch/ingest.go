package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/obs"
)

// runIngest writes reports, rollups, alert events and meter reports from JetStream to InfluxDB.
func runIngest(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("ingest", stderr)
	cfgPath := fs.String("config", "", "YAML config (configs/ingest.yaml); defaults when empty")
	natsURL := fs.String("nats", "", "NATS server URLs, comma-separated (overrides nats.servers)")
	ensureDB := fs.Bool("ensure-db", false, "create the database (InfluxDB 1.x) or check the bucket (2.x) at start")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz, /readyz here (overrides metrics_addr)")
	workers := fs.Int("workers", 0, "workers per consumer (overrides workers)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log_level)")
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
	if *natsURL != "" {
		cfg.NATS.Servers = strings.Split(*natsURL, ",")
	}
	if *ensureDB {
		cfg.EnsureDB = true
	}
	if *metricsAddr != "" {
		cfg.MetricsAddr = *metricsAddr
	}
	if *workers > 0 {
		cfg.Workers = *workers
	}
	if *logLevel != "" {
		cfg.LogLevel = *logLevel
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	logger, err := newLogger(stderr, cfg.LogLevel)
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(cfg.NATS, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := obs.NewRegistry()
	in, err := ingest.New(cfg, nc, logger, reg)
	if err != nil {
		return err
	}
	addr, err := obs.Serve(ctx, cfg.MetricsAddr, obs.Mux(reg, in.Ready), logger)
	if err != nil {
		return err
	}
	if addr != "" {
		logger.Info("serving metrics", "addr", addr)
	}
	if err := in.Run(ctx); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return nil
}
