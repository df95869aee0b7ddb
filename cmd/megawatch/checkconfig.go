package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters"
)

// configKinds maps a config kind to its loader, which applies defaults,
// reads the file strictly and validates it, returning every problem.
func configKinds() map[string]func(path string) error {
	return map[string]func(path string) error{
		"collector": func(p string) error { _, err := collector.LoadConfig(p); return err },
		"ingest":    func(p string) error { _, err := ingest.LoadConfig(p); return err },
		"topology":  func(p string) error { _, err := topology.Load(p); return err },
		"alerts":    loadAlertsConfig,
		"meters":    func(p string) error { _, err := meters.LoadConfig(p); return err },
	}
}

// runCheckConfig validates config files and prints every problem of each.
// The kind comes from --kind or from the file name (collector*.yaml,
// ingest*.yaml, alerts*.yaml, *topology*.yaml).
func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check-config", stderr)
	kind := fs.String("kind", "", "config kind: collector, ingest, alerts or topology (default: from the file name)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: megawatch check-config [--kind KIND] FILE...")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return fmt.Errorf("%w: name at least one config file", errUsage)
	}
	kinds := configKinds()
	failed := 0
	for _, path := range fs.Args() {
		k := *kind
		if k == "" {
			k = kindFromName(path, kinds)
		}
		load, ok := kinds[k]
		if !ok {
			return fmt.Errorf("%w: %s: cannot tell the config kind from the name; use --kind (%s)", errUsage, path, strings.Join(sortedKeys(kinds), ", "))
		}
		if err := load(path); err != nil {
			failed++
			fmt.Fprintf(stdout, "%s (%s): invalid\n", path, k)
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(stdout, "  %s\n", line)
			}
			continue
		}
		fmt.Fprintf(stdout, "%s (%s): ok\n", path, k)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d config files are invalid", failed, fs.NArg())
	}
	return nil
}

func kindFromName(path string, kinds map[string]func(string) error) string {
	base := strings.ToLower(filepath.Base(path))
	for _, k := range sortedKeys(kinds) {
		if strings.Contains(base, k) {
			return k
		}
	}
	if strings.Contains(base, "rules") {
		return "alerts"
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func loadAlertsConfig(p string) error { _, err := alerts.LoadConfig(p); return err }
