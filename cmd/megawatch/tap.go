package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/megawatch/megawatch/ingest"
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
		fmt.Fprintf(stderr, "usage: megawatch tap [flags] [subject]\n\nsubject defaults to %s; rollups are %s, alerts %s, meter reports %s.\n\n",
			telemetry.PowerWildcard, telemetry.RollupWildcard, telemetry.AlertWildcard, telemetry.MeterWildcard)
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
	case strings.HasPrefix(subject, telemetry.MeterPrefix+"."):
		kind, msg = "meter_report", &telemetry.MeterReport{}
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
	lines := dead && hdr.Get(ingest.HeaderDeadFormat) == "line-protocol"
	if dead {
		// A dead letter carries the rejected message as it was; decode it by
		// the subject it was published on. A field type conflict's dead
		// letter carries the refused lines (line protocol) instead.
		kind = "deadletter"
		msg, derr = nil, nil
		if from := hdr.Get(telemetry.HeaderDeadFrom); from != "" && !lines {
			_, msg, derr = decodeTapped(from, data)
		}
	}
	if asJSON {
		out := map[string]any{"subject": subject, "type": kind}
		if dead {
			out["reason"] = hdr.Get(telemetry.HeaderDeadReason)
			out["error"] = hdr.Get(telemetry.HeaderDeadError)
			out["from"] = hdr.Get(telemetry.HeaderDeadFrom)
			if lines {
				out["field"] = hdr.Get(ingest.HeaderDeadField)
				out["types"] = hdr.Get(ingest.HeaderDeadTypes)
				out["line_protocol"] = string(data)
			}
		}
		switch {
		case lines:
		case derr != nil:
			out["decode_error"] = derr.Error()
		case msg != nil:
			b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
			if err != nil {
				return err
			}
			out["data"] = json.RawMessage(b)
			if r, ok := msg.(*telemetry.NodeReport); ok {
				if np := nodePowerJSON(r); np != nil {
					out["node_power"] = np
				}
			}
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
		if lines {
			if _, err = fmt.Fprintf(w, "  field=%s types=%q, %d refused lines:\n", hdr.Get(ingest.HeaderDeadField), hdr.Get(ingest.HeaderDeadTypes),
				strings.Count(strings.TrimRight(string(data), "\n"), "\n")+1); err != nil {
				return err
			}
			for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
				if _, err = fmt.Fprintf(w, "  %s\n", l); err != nil {
					return err
				}
			}
			return nil
		}
	}
	switch m := msg.(type) {
	case *telemetry.NodeReport:
		_, err = io.WriteString(w, formatReport(m))
	case *telemetry.Rollup:
		_, err = io.WriteString(w, formatRollup(m))
	case *telemetry.MeterReport:
		_, err = io.WriteString(w, formatMeter(m))
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
	node := ""
	if r.NodePowerMw != nil {
		node = fmt.Sprintf(" node %.0f W (%s)", float64(r.GetNodePowerMw())/1000, nodePowerSourceName(r.NodePowerSource))
	} else if r.NodePowerSource != telemetry.NodePowerSource_NODE_POWER_NONE {
		node = fmt.Sprintf(" node - (%s)", nodePowerSourceName(r.NodePowerSource))
	}
	if r.CpuPowerMw != nil {
		node += fmt.Sprintf(" cpu %.0f W", float64(r.GetCpuPowerMw())/1000)
	}
	if r.NodeEnergyMj != nil {
		node += fmt.Sprintf(" node_energy %.3f kWh", float64(r.GetNodeEnergyMj())/3.6e9)
	}
	fmt.Fprintf(&b, "%s %s seq=%d %.0f W (slot max %d W)%s gpus %d/%d ok%s\n", stamp(r.WindowEndUnixNs),
		telemetry.ReportLocation(r), r.Seq, float64(sumMW)/1000, slotMax, node, healthy, len(r.Gpus), flags)
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

// nodePowerSourceName is "redfish", "hwmon", "model" or "none".
func nodePowerSourceName(s telemetry.NodePowerSource) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "NODE_POWER_"))
}

// formatMeter: one line per meter report; a stale one shows no power
// (never 0 W) and why.
func formatMeter(r *telemetry.MeterReport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s METER %s %s", stamp(r.WindowEndUnixNs), r.Meter, strings.Join(r.Path, "/"))
	if r.Feed != "" {
		fmt.Fprintf(&b, " feed=%s", r.Feed)
	}
	if r.Phase != "" {
		fmt.Fprintf(&b, " phase=%s", r.Phase)
	}
	if r.PowerW != nil {
		fmt.Fprintf(&b, " %.1f W", r.GetPowerW())
	} else {
		b.WriteString(" - W")
	}
	if r.EnergyWh != nil {
		fmt.Fprintf(&b, " energy=%.0f Wh", r.GetEnergyWh())
	}
	if r.Stale {
		fmt.Fprintf(&b, " STALE error=%q", r.Error)
		if r.ReadUnixNs != 0 {
			fmt.Fprintf(&b, " last_read=%s", stamp(r.ReadUnixNs))
		}
	}
	fmt.Fprintf(&b, " %s seq=%d poller=%s\n", strings.ToLower(strings.TrimPrefix(r.Protocol.String(), "METER_PROTOCOL_")), r.Seq, r.Poller)
	return b.String()
}

// nodePowerJSON is a report's node-power fields in watts, for --json
// (data carries them as the wire's milliwatts); nil when it has none.
func nodePowerJSON(r *telemetry.NodeReport) map[string]any {
	if r.NodePowerMw == nil && r.CpuPowerMw == nil && r.NodeEnergyMj == nil && r.NodePowerSource == telemetry.NodePowerSource_NODE_POWER_NONE {
		return nil
	}
	out := map[string]any{"source": nodePowerSourceName(r.NodePowerSource)}
	if r.NodePowerMw != nil {
		out["node_power_w"] = float64(r.GetNodePowerMw()) / 1000
	}
	if r.CpuPowerMw != nil {
		out["cpu_power_w"] = float64(r.GetCpuPowerMw()) / 1000
	}
	if r.NodeEnergyMj != nil {
		out["node_energy_wh"] = float64(r.GetNodeEnergyMj()) / 3.6e6
	}
	return out
}
