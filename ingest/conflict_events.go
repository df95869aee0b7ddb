package ingest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"encoding/json"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// Alert events about field type conflicts go to
// megawatch.v1.alert.<conflictSeverity>.<conflictRule> (and from there to
// InfluxDB's alert measurement, Grafana's annotations).
const (
	conflictRule     = "ingest_field_conflict"
	conflictSeverity = "warning"
)

// ConflictAlertSubject is the subject of those events: ingest's NATS user
// must be allowed to publish it (internal/natsauth).
const ConflictAlertSubject = telemetry.AlertPrefix + "." + conflictSeverity + "." + conflictRule

func conflictHelp(t *target, c *fieldConflict) string {
	return fmt.Sprintf("ingest target %s: InfluxDB refuses %s.%s (%s) in %s: those points are dead-lettered (megawatch.v1.deadletter.conflict, as line protocol), the rest is written. "+
		"Fix: drop the shard that holds the old type (SHOW SHARDS, then DROP SHARD <id>; on InfluxDB 1.8 DROP SERIES and DROP MEASUREMENT do not clear a field's type in a shard), wait for the shard to end, or write the field under a new name; then replay the dead letters. "+
		"See docs/ingest.md, Field type conflicts.",
		t.Name, c.measurement, c.field, fmt.Sprintf("ingest writes %s, InfluxDB has %s", c.got, c.have), c.String())
}

// newConflict logs, counts and announces a conflict ingest has just learnt.
func (in *Ingester) newConflict(ctx context.Context, t *target, c *fieldConflict) {
	in.m.conflicts.WithLabelValues(t.Name, c.measurement, c.field).Inc()
	in.log.Error("field type conflict: lines dead-lettered until it is resolved", "target", t.Name, "conflict", c.String(), "help", "docs/ingest.md#field-type-conflicts")
	in.publishConflictEvent(ctx, t, c, telemetry.AlertState_ALERT_STATE_FIRING)
}

// expireConflicts forgets the conflicts whose shard has ended and that no
// line has hit for conflict_probe: new points go to the next shard (a late
// line for the old one meets the conflict again and has it learnt again,
// one request).
func (in *Ingester) expireConflicts(ctx context.Context, t *target) {
	now := time.Now().UnixNano()
	for _, c := range t.conflicts.snapshot() {
		if c.end != 0 && now >= c.end && now-c.lastHit.Load() > int64(in.cfg.ConflictProbe) {
			in.resolveConflict(ctx, t, c)
		}
	}
}

// resolveConflict forgets c once InfluxDB took its lines again.
func (in *Ingester) resolveConflict(ctx context.Context, t *target, c *fieldConflict) {
	if !t.conflicts.remove(c) {
		return
	}
	in.m.conflicts.WithLabelValues(t.Name, c.measurement, c.field).Dec()
	in.log.Info("field type conflict resolved: writing the field again", "target", t.Name, "conflict", c.String(), "lines_dead_lettered", c.lines.Load())
	in.publishConflictEvent(ctx, t, c, telemetry.AlertState_ALERT_STATE_RESOLVED)
}

func (in *Ingester) publishConflictEvent(ctx context.Context, t *target, c *fieldConflict, st telemetry.AlertState) {
	subj, err := telemetry.AlertSubject(conflictSeverity, conflictRule)
	if err != nil {
		return
	}
	now := time.Now()
	ev := &telemetry.AlertEvent{Rule: conflictRule, Severity: conflictSeverity, Level: "ingest",
		Domain: t.Name + "/" + c.bucket + "/" + c.measurement + "." + c.field, State: st,
		Value: float64(c.lines.Load()), Message: conflictHelp(t, c), AtUnixNs: now.UnixNano(), ActiveSinceUnixNs: c.since.UnixNano(),
		Labels:      map[string]string{"target": t.Name, "bucket": c.bucket, "measurement": c.measurement, "field": c.field},
		Fingerprint: conflictRule + "/" + t.Name + "/" + c.bucket + "/" + c.measurement + "." + c.field}
	if st == telemetry.AlertState_ALERT_STATE_RESOLVED {
		ev.Message = fmt.Sprintf("ingest target %s: %s.%s is written again (%d lines were dead-lettered)", t.Name, c.measurement, c.field, c.lines.Load())
	}
	data, err := proto.Marshal(ev)
	if err != nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := in.js.Publish(pctx, subj, data); err != nil {
		in.warnLimited("conflict alert event not published", "subject", subj, "err", err)
	}
}

// shardDuration is the shard duration of bucket's retention policy: from
// the config, else asked of InfluxDB 1.x (SHOW RETENTION POLICIES), else 0
// (unknown: a conflict then covers all time until a probe clears it).
func (in *Ingester) shardDuration(ctx context.Context, t *target, bucket string) time.Duration {
	if d := t.shardDuration(bucket); d > 0 {
		return d
	}
	t.shardMu.Lock()
	defer t.shardMu.Unlock()
	if d, ok := t.shardDur[bucket]; ok {
		return d
	}
	d := queryShardDuration(ctx, t, bucket)
	if t.shardDur == nil {
		t.shardDur = map[string]time.Duration{}
	}
	t.shardDur[bucket] = d
	return d
}

func queryShardDuration(ctx context.Context, t *target, bucket string) time.Duration {
	s, ok := t.sink.(*influxSink)
	db, rp, found := strings.Cut(bucket, "/")
	if !ok || !found {
		return 0
	}
	rows, err := s.influxQL(ctx, http.MethodGet, "", `SHOW RETENTION POLICIES ON `+quoteIdent(db))
	if err != nil {
		return 0
	}
	for _, r := range rows {
		if len(r) >= 3 && r[0] == rp {
			if d, err := time.ParseDuration(r[2]); err == nil {
				return d
			}
		}
	}
	return 0
}

// quoteIdent quotes an InfluxQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// influxAnswer is a 1.x /query answer.
type influxAnswer struct {
	Results []struct {
		Series []struct {
			Name    string   `json:"name"`
			Columns []string `json:"columns"`
			Values  [][]any  `json:"values"`
		} `json:"series"`
		Error string `json:"error"`
	} `json:"results"`
	Error string `json:"error"`
}

// influxQL runs one InfluxQL statement on a 1.x server and returns every
// row of its series as strings.
func (s *influxSink) influxQL(ctx context.Context, method, db, q string) ([][]string, error) {
	out, err := s.influxQLRaw(ctx, method, db, q)
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, r := range out.Results {
		for _, se := range r.Series {
			for _, v := range se.Values {
				row := make([]string, len(v))
				for i, x := range v {
					row[i] = fmt.Sprint(x)
				}
				rows = append(rows, row)
			}
		}
	}
	return rows, nil
}

func (s *influxSink) influxQLRaw(ctx context.Context, method, db, q string) (*influxAnswer, error) {
	v := url.Values{"q": {q}}
	if db != "" {
		v.Set("db", db)
	}
	var req *http.Request
	if method == http.MethodPost {
		req, _ = http.NewRequestWithContext(ctx, method, s.base+"/query", strings.NewReader(v.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, _ = http.NewRequestWithContext(ctx, method, s.base+"/query?"+v.Encode(), nil)
	}
	s.auth(req)
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	var out influxAnswer
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: status %d: %s", q, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if out.Error != "" {
		return nil, fmt.Errorf("%s: %s", q, out.Error)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", q, resp.StatusCode)
	}
	for _, r := range out.Results {
		if r.Error != "" {
			return nil, fmt.Errorf("%s: %s", q, r.Error)
		}
	}
	return &out, nil
}
