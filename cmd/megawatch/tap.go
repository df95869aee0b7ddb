package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// runTap subscribes to a subject (core NATS: it sees live traffic, stores
// nothing) and prints every report, rollup or alert event decoded.
func runTap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tap", stderr)
	nf := addNATSFlags(fs, "")
	cfgPath := fs.String("config", "", "take the NATS connection (servers, creds, TLS) from this collector config; the other flags override it")
	asJSON := fs.Bool("json", false, "one JSON object per line: {subject, type, data}")
	count := fs.Int("count", 0, "exit after this many messages (0: until interrupted)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: megawatch tap [flags] [subject]\n\nsubject defaults to %s; rollups are %s, alerts %s.\n\n",
			telemetry.PowerWildcard, telemetry.RollupWildcard, telemetry.AlertWildcard)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("%w: at most one subject, got %q", errUsage, fs.Args())
	}
	subject := telemetry.PowerWildcard
	if fs.NArg() == 1 {
		subject = fs.Arg(0)
	}
	cfg := natsx.DefaultConfig()
	if *cfgPath != "" {
		c, err := collector.LoadConfig(*cfgPath)
		if err != nil {
			return err
		}
		cfg = c.NATS
	}
	if err := nf.apply(&cfg); err != nil {
		return err
	}
	cfg.Name = "megawatch-tap"
	nc, err := nf.connectOnce(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	msgs := make(chan *nats.Msg, 4096)
	sub, err := nc.ChanSubscribe(subject, msgs)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	defer sub.Unsubscribe()
	if err := nc.FlushTimeout(*nf.timeout); err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := nc.LastError(); err != nil { // e.g. a permissions violation for the subject
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	for n := 0; *count == 0 || n < *count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			if err := printTapped(stdout, m.Subject, m.Header, m.Data, *asJSON); err != nil {
				return err
			}
		}
	}
	return nil
}

// decodeTapped decodes a message by its subject prefix.
func decodeTapped(subject string, data []byte) (kind string, msg proto.Message, err error) {
	switch {
	case strings.HasPrefix(subject, telemetry.PowerPrefix+"."):
		kind, msg = "node_report", &telemetry.NodeReport{}
	case strings.HasPrefix(subject, telemetry.RollupPrefix+"."):
		kind, msg = "rollup", &telemetry.Rollup{}
	case strings.HasPrefix(subject, telemetry.AlertPrefix+"."):
		kind, msg = "alert_event", &telemetry.AlertEvent{}
	default:
		return "raw", nil, nil
	}
	if err := proto.Unmarshal(data, msg); err != nil {
		return kind, nil, err
	}
	return kind, msg, nil
}

// printTapped writes one message, human-readable or as a JSON line. A
// message that does not decode is reported, not fatal.
func printTapped(w io.Writer, subject string, hdr nats.Header, data []byte, asJSON bool) error {
	kind, msg, derr := decodeTapped(subject, data)
	dead := strings.HasPrefix(subject, telemetry.DeadLetterPrefix+".")
	if dead {
		// A dead letter carries the rejected message as it was; decode it by
		// the subject it was published on.
		kind = "deadletter"
		if from := hdr.Get(telemetry.HeaderDeadFrom); from != "" {
			_, msg, derr = decodeTapped(from, data)
		}
	}
	if asJSON {
		out := map[string]any{"subject": subject, "type": kind}
		if dead {
			out["reason"] = hdr.Get(telemetry.HeaderDeadReason)
			out["error"] = hdr.Get(telemetry.HeaderDeadError)
			out["from"] = hdr.Get(telemetry.HeaderDeadFrom)
		}
		switch {
		case derr != nil:
			out["decode_error"] = derr.Error()
		case msg != nil:
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
			if err != nil {
				return err
			}
			out["data"] = json.RawMessage(b)
		default:
			out["bytes"] = len(data)
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var err error
	if dead {
		if _, err = fmt.Fprintf(w, "DEADLETTER reason=%s from=%s error=%q\n", hdr.Get(telemetry.HeaderDeadReason),
			hdr.Get(telemetry.HeaderDeadFrom), hdr.Get(telemetry.HeaderDeadError)); err != nil {
			return err
		}
	}
	switch m := msg.(type) {
	case *telemetry.NodeReport:
		_, err = io.WriteString(w, formatReport(m))
	case *telemetry.Rollup:
		_, err = io.WriteString(w, formatRollup(m))
	case *telemetry.AlertEvent:
		_, err = fmt.Fprintf(w, "%s ALERT %-8s %s %s/%s value=%g threshold=%g %s\n", stamp(m.AtUnixNs), strings.TrimPrefix(m.State.String(), "ALERT_STATE_"),
			m.Severity, m.Rule, m.Domain, m.Value, m.Threshold, m.Message)
	default:
		if derr != nil {
			_, err = fmt.Fprintf(w, "%s: undecodable %s (%d bytes): %v\n", subject, kind, len(data), derr)
		} else {
			_, err = fmt.Fprintf(w, "%s: %d bytes\n", subject, len(data))
		}
	}
	return err
}

func stamp(ns int64) string { return time.Unix(0, ns).UTC().Format("15:04:05.000") }

// formatReport: a summary line and one line per GPU.
func formatReport(r *telemetry.NodeReport) string {
	var b strings.Builder
	var sumMW uint64
	healthy := 0
	for _, g := range r.Gpus {
		if g.Health == telemetry.Health_HEALTH_OK {
			healthy++
			sumMW += uint64(g.GetPowerMw())
		}
	}
	flags := ""
	if r.Replayed {
		flags += " replayed"
	}
	if r.SlotMissingMask != 0 {
		flags += fmt.Sprintf(" missing_slots=%b", r.SlotMissingMask)
	}
	slotMax := uint32(0)
	if len(r.SlotPowerW) > 0 {
		slotMax = slices.Max(r.SlotPowerW)
	}
	fmt.Fprintf(&b, "%s %s seq=%d %.0f W (slot max %d W) gpus %d/%d ok%s\n", stamp(r.WindowEndUnixNs),
		telemetry.ReportLocation(r), r.Seq, float64(sumMW)/1000, slotMax, healthy, len(r.Gpus), flags)
	for _, g := range r.Gpus {
		fmt.Fprintf(&b, "  gpu%d %s", g.Index, strings.ToLower(strings.TrimPrefix(g.Health.String(), "HEALTH_")))
		opt := func(name string, ok bool, v string) {
			if ok {
				fmt.Fprintf(&b, " %s=%s", name, v)
			}
		}
		opt("power", g.PowerMw != nil, fmt.Sprintf("%.1fW", float64(g.GetPowerMw())/1000))
		opt("min", g.PowerMinMw != nil, fmt.Sprintf("%.0fW", float64(g.GetPowerMinMw())/1000))
		opt("max", g.PowerMaxMw != nil, fmt.Sprintf("%.0fW", float64(g.GetPowerMaxMw())/1000))
		opt("temp", g.TempC != nil, fmt.Sprintf("%dC", g.GetTempC()))
		opt("mem", g.MemTempC != nil, fmt.Sprintf("%dC", g.GetMemTempC()))
		opt("sm", g.SmClockMhz != nil, fmt.Sprintf("%dMHz", g.GetSmClockMhz()))
		opt("util", g.UtilPct != nil, fmt.Sprintf("%d%%", g.GetUtilPct()))
		opt("throttle", g.GetThrottleReasons() != 0, fmt.Sprintf("%#x", g.GetThrottleReasons()))
		opt("epoch", g.EnergyEpoch != 0, fmt.Sprint(g.EnergyEpoch))
		opt("err", g.Error != "", fmt.Sprintf("%q", g.Error))
		b.WriteByte('\n')
	}
	return b.String()
}

func formatRollup(r *telemetry.Rollup) string {
	return fmt.Sprintf("%s ROLLUP %s %s %.3f MW (est %.3f, max %.3f, cap %.3f) nodes %d/%d gpus %d/%d\n",
		stamp(r.WindowEndUnixNs), r.Level, strings.Join(r.Path, "/"), telemetry.WToMW(r.PowerW), telemetry.WToMW(r.PowerEstW),
		telemetry.WToMW(r.PowerMaxW), telemetry.WToMW(r.CapacityW), r.NodesReporting, r.NodesExpected, r.GpusHealthy, r.Gpus)
}
