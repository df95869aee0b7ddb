package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/obs"
)

// runAlerts aggregates power up the hierarchy, evaluates the alert rules,
// notifies and serves the live page.
func runAlerts(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("alerts", stderr)
	cfgPath := fs.String("config", "", "YAML config (configs/alerts.yaml); defaults when empty")
	topoPath := fs.String("topology", "", "topology file (overrides topology; default: the embedded configs/topology.yaml)")
	rulesPath := fs.String("rules", "", "rules file (overrides rules_file)")
	scope := fs.String("scope", "", "aggregate one domain only, e.g. dc1.h1 for a hall aggregator (overrides scope)")
	fromHalls := fs.Bool("site-from-halls", false, "site aggregator: consume the hall aggregators' hall rollups (overrides site_from_halls)")
	natsURL := fs.String("nats", "", "NATS server URLs, comma-separated (overrides nats.servers)")
	httpAddr := fs.String("http-addr", "", "live page, /metrics, /healthz, /readyz (overrides http_addr)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg := alerts.DefaultConfig()
	if *cfgPath != "" {
		if cfg, err = alerts.LoadConfig(*cfgPath); err != nil {
			return err
		}
	}
	if *topoPath != "" {
		cfg.Topology = *topoPath
	}
	if *rulesPath != "" {
		cfg.RulesFile = *rulesPath
		if err := cfg.LoadRulesFile(); err != nil {
			return err
		}
	}
	if *scope != "" {
		cfg.Scope = *scope
	}
	if *fromHalls {
		cfg.SiteFromHalls = true
	}
	if *natsURL != "" {
		cfg.NATS.Servers = strings.Split(*natsURL, ",")
	}
	if *httpAddr != "" {
		cfg.HTTPAddr = *httpAddr
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if _, err := cfg.Notifiers.CheckPaging(); err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	topo, err := cfg.LoadTopology()
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(cfg.NATS, logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	e, err := alerts.New(cfg, topo, nc, logger, obs.NewRegistry())
	if err != nil {
		return err
	}
	if err := e.Run(ctx); err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	return nil
}
