package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

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

// kindKeys are the top-level keys each kind of file takes.
func kindKeys() map[string]map[string]bool {
	return map[string]map[string]bool{
		"collector": yamlKeys(collector.Config{}),
		"ingest":    yamlKeys(ingest.Config{}),
		"alerts":    yamlKeys(alerts.Config{}),
		"meters":    yamlKeys(meters.Config{}),
		"topology":  {"levels": true, "domains": true},
	}
}

// yamlKeys lists the yaml keys of a config struct's fields.
func yamlKeys(v any) map[string]bool {
	out := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			out[name] = true
		}
	}
	return out
}

// kindFromContent tells the kind from the file's top-level keys: the kind
// that knows the most of them, if only one does (collector, ingest and
// alerts share nats: and streams:). "" when the keys do not decide.
func kindFromContent(path string) (kind string, fits []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil
	}
	var top map[string]any
	if yaml.Unmarshal(b, &top) != nil || len(top) == 0 {
		return "", nil
	}
	best := 0
	for k, known := range kindKeys() {
		n := 0
		for key := range top {
			if known[key] {
				n++
			}
		}
		switch {
		case n > best:
			best, fits = n, []string{k}
		case n == best && n > 0:
			fits = append(fits, k)
		}
	}
	sort.Strings(fits)
	if len(fits) == 1 {
		return fits[0], fits
	}
	return "", fits
}

// runCheckConfig validates config files and prints every problem of each.
// The kind comes from --kind, else from the file's keys, else (when the
// keys fit several kinds) from the file name (collector*.yaml,
// ingest*.yaml, alerts*.yaml, meters*.yaml, *topology*.yaml).
func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check-config", stderr)
	kind := fs.String("kind", "", "config kind: collector, ingest, alerts, meters or topology (default: from the file's keys, then its name)")
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
		if _, ok := kinds[k]; k != "" && !ok {
			return fmt.Errorf("%w: --kind %q: one of %s", errUsage, k, strings.Join(sortedKeys(kinds), ", "))
		}
		if k == "" {
			var fits []string
			if k, fits = kindFromContent(path); k == "" {
				k = kindFromName(path, kinds)
				if len(fits) > 0 && !slices.Contains(fits, k) {
					k = ""
				}
			}
			if k == "" {
				hint := "neither its keys nor its name tell"
				if len(fits) > 1 {
					hint = "its keys fit " + strings.Join(fits, " and ") + " and its name does not tell"
				}
				return fmt.Errorf("%w: %s: cannot tell the config kind (%s); use --kind (%s)", errUsage, path, hint, strings.Join(sortedKeys(kinds), ", "))
			}
		}
		load := kinds[k]
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
