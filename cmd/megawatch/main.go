// Command megawatch is the one binary of the megawatch pipeline.
//
//	megawatch collector|meters|ingest|alerts|demo|loadgen|tap|check-config|version [flags]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command runs one subcommand. It returns an error to print as one line;
// errUsage (wrapped) exits 2, flag.ErrHelp exits 0.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var errUsage = errors.New("usage")

func commands() map[string]command {
	return map[string]command{
		"collector":    {"read GPU power and thermals through NVML and publish node reports to NATS", runCollector},
		"meters":       {"poll facility meters (SNMP PDUs, Modbus switchgear) and publish meter reports to NATS", runMeters},
		"ingest":       {"write reports, rollups and alert events from JetStream to InfluxDB", runIngest},
		"alerts":       {"aggregate power up the hierarchy, evaluate alert rules, notify, serve the live page", runAlerts},
		"demo":         {"run the whole pipeline on a simulated campus, in one process", runDemo},
		"loadgen":      {"publish the reports of N simulated nodes to NATS (sizing and benchmarks)", runLoadgen},
		"tap":          {"print decoded reports, rollups or alerts from a subject", runTap},
		"check-config": {"validate config files and print every problem", runCheckConfig},
		"check-influx": {"compare InfluxDB's series limits with what the topology writes", runCheckInflux},
		"version":      {"print the version", runVersion},

		"nats-accounts": {"generate the NATS operator, accounts, every node's creds, server config and test TLS from the topology", runNATSAccounts},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "megawatch: unknown command %q\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	err := c.run(ctx, args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "megawatch %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "megawatch %s: %s\n", args[0], strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: megawatch <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'megawatch <command> -h' for its flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("megawatch "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, turning flag errors into errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// newLogger returns a text slog logger on w at level ("debug", "info", "warn", "error").
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("%w: log level %q: want debug, info, warn or error", errUsage, level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}
