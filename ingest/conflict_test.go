package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParseConflict(t *testing.T) {
	f := func(msg string, want conflictAnswer, ok bool) {
		t.Helper()
		got, gotOK := parseConflict(msg)
		if gotOK != ok || got != want {
			t.Errorf("parseConflict(%q) = %+v, %v; want %+v, %v", msg, got, gotOK, want, ok)
		}
	}
	// InfluxDB 1.8 (measured on 1.8.10)
	f(`partial write: field type conflict: input field "power_w" on measurement "gpu" is type float, already exists as type string dropped=8`,
		conflictAnswer{field: "power_w", measurement: "gpu", got: "float", have: "string", dropped: 8}, true)
	// InfluxDB 2.x
	f(`failure writing points to database: partial write: field type conflict: input field "gpus" on measurement "node" is type integer, already exists as type float dropped=3`,
		conflictAnswer{field: "gpus", measurement: "node", got: "integer", have: "float", dropped: 3}, true)
	f(`field type conflict: input field "a \"b\"" on measurement "m\\x" is type boolean, already exists as type float`,
		conflictAnswer{field: `a "b"`, measurement: `m\x`, got: "boolean", have: "float", dropped: -1}, true)
	f(`unable to parse 'gpu power_w=': missing field value`, conflictAnswer{}, false)
	f(`retention policy not found: x`, conflictAnswer{}, false)
}

// TestClassify3xPartial: InfluxDB 3.x lists refused lines in "data".
func TestClassify3xPartial(t *testing.T) {
	body := `{"error":"partial write of line protocol occurred","data":[{"original_line":"gpu,gpu=0 power_w=\"x\" 1","line_number":2,"error_message":"invalid column type for column 'power_w', expected iox::column_type::field::float, got iox::column_type::field::string"}]}`
	resp := &http.Response{StatusCode: 400, Status: "400 Bad Request", Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(body))}
	we := classifyResponse(resp)
	if !we.Rejected || len(we.Lines) != 1 || we.Lines[0].Line != 2 || !strings.Contains(we.Lines[0].Message, "column 'power_w'") || we.Message != "partial write of line protocol occurred" {
		t.Errorf("classify: %+v", we)
	}
}

func FuzzParseWriteAnswer(f *testing.F) {
	f.Add(`partial write: field type conflict: input field "power_w" on measurement "gpu" is type float, already exists as type string dropped=8`)
	f.Add(`{"error":"partial write of line protocol occurred","data":[{"line_number":2,"error_message":"column 'x' type"}]}`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseConflict(s)
		_ = classifyResponse(&http.Response{StatusCode: 400, Header: http.Header{}, Body: io.NopCloser(strings.NewReader(s))})
		line := []byte(s)
		_ = lineMeasurement(line)
		if fields, _, ok := lineFields(line); ok {
			_ = hasField(fields, "power_w")
		}
	})
}

func TestLineHelpers(t *testing.T) {
	line := []byte(`gpu,gpu=0,hall=h\ 1,node=n,rack=k,row=r,site=s energy_mj=5i,healthy=true,power_w=465.5,temp_c=61 1764583000000000000` + "\n")
	if string(lineMeasurement(line)) != "gpu" {
		t.Errorf("measurement %q", lineMeasurement(line))
	}
	fields, ts, ok := lineFields(line)
	if !ok || ts != 1764583000000000000 || !hasField(fields, "power_w") || hasField(fields, "power") || hasField(fields, "node") {
		t.Errorf("fields %q ts %d ok %v", fields, ts, ok)
	}
	al := []byte(`alert,rule=r,severity=s message="power_w=1, x",state="firing",threshold=1,value=2 1` + "\n")
	fields, _, _ = lineFields(al)
	if hasField(fields, "power_w") || !hasField(fields, "state") || !hasField(fields, "value") {
		t.Errorf("alert fields %q", fields)
	}
	// 7-day shards start on Mondays, as InfluxDB 1.8's do (measured: 2025-12-01..12-08).
	s, e := shardRange(1764583000000000000, 7*24*time.Hour)
	if time.Unix(0, s).UTC().Format(time.DateOnly) != "2025-12-01" || time.Unix(0, e).UTC().Format(time.DateOnly) != "2025-12-08" {
		t.Errorf("shard %v..%v", time.Unix(0, s).UTC(), time.Unix(0, e).UTC())
	}
}

// TestFieldConflict: another writer stored gpu.power_w as a string in the
// current shard. Every node point and every non-conflicting line of the
// same batches is written; only the conflicting gpu lines are
// dead-lettered (as line protocol, with measurement, field and types);
// each batch costs one write request (no bisection); /readyz names the
// field; an alert event tells on-call; after the shard is dropped the
// conflict clears and gpu points are written again.
func TestFieldConflict(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.Exec(t, "", `CREATE DATABASE mw`)
	natsURL, js := natsInProcess(t)
	now := time.Now().Truncate(time.Second)
	resp, err := http.Post(influx.URL+"/write?db=mw", "text/plain", strings.NewReader("gpu,gpu=0,hall=h1,node=other,rack=k,row=r,site=dc1 power_w=\"bad\" "+itoa(now.Add(-time.Hour).UnixNano())+"\n"))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("seed conflict: %v %v", err, resp)
	}
	const nodes, windows = 40, 30 // 1,200 reports
	start := now.Add(-10 * time.Minute)
	if start.Truncate(7*24*time.Hour) != now.Add(-time.Hour).Truncate(7*24*time.Hour) {
		start = now.Add(-time.Hour + time.Second) // stay in the seeded shard
	}
	for w := range windows {
		for i := range nodes {
			publishReport(t, js, testReport(testLoc(i), uint64(w+1), start.Add(time.Duration(w)*time.Second), 8))
		}
	}
	cfg := testConfig(influx.URL, "mw")
	cfg.BatchLines = 900 // 100 reports a batch: 12 batches
	cfg.Workers = 1
	cfg.Rollups = true
	cfg.ConflictProbe = time.Hour // no probe in the first phase
	in, stop, _ := startIngest(t, cfg, natsURL, nil)
	waitFor(t, 60*time.Second, "node points and conflict dead letters", func() bool {
		return influx.Count(t, "mw", `SELECT count(gpus) FROM node`) == nodes*windows &&
			testutil.ToFloat64(in.m.deadLetter.WithLabelValues(ReasonConflict)) == nodes*windows
	})
	if n := influx.Count(t, "mw", `SELECT count(power_w) FROM gpu WHERE node != 'other'`); n != 0 {
		t.Errorf("%d conflicting gpu points written", n)
	}
	batches := testutil.ToFloat64(in.m.batches.WithLabelValues("t"))
	requests := testutil.ToFloat64(in.m.requests.WithLabelValues("t"))
	t.Logf("%v batches, %v write requests", batches, requests)
	if requests > batches+1 || batches > 2*float64(nodes*windows*9)/float64(cfg.BatchLines)+2 {
		t.Errorf("%v write requests for %v batches: want at most one per batch (no bisection)", requests, batches)
	}
	if got := testutil.ToFloat64(in.m.conflictLines.WithLabelValues("t", "gpu", "power_w")); got != nodes*windows*8 {
		t.Errorf("conflict lines %v, want %d", got, nodes*windows*8)
	}
	err = in.Ready()
	if err == nil || !strings.Contains(err.Error(), "gpu.power_w") || !strings.Contains(err.Error(), "degraded") {
		t.Errorf("Ready() = %v, want degraded naming gpu.power_w", err)
	}
	if got := testutil.ToFloat64(in.m.conflicts.WithLabelValues("t", "gpu", "power_w")); got != 1 {
		t.Errorf("conflicts gauge %v, want 1", got)
	}
	// The dead letters: line protocol of the 8 gpu lines, with the field and types.
	dl := fetchAll(t, js, telemetry.StreamDeadLetter, "megawatch.v1.deadletter.conflict")
	if len(dl) != nodes*windows {
		t.Fatalf("%d conflict dead letters, want %d", len(dl), nodes*windows)
	}
	h := dl[0].Headers()
	if h.Get(HeaderDeadFormat) != "line-protocol" || h.Get(HeaderDeadField) != "gpu.power_w" || !strings.Contains(h.Get(HeaderDeadTypes), "float (InfluxDB has string)") ||
		bytes.Count(dl[0].Data(), []byte("\n")) != 8 || !bytes.HasPrefix(dl[0].Data(), []byte("gpu,gpu=")) || !strings.HasPrefix(h.Get(telemetry.HeaderMsgID), "dl:conflict:") {
		t.Errorf("dead letter headers %v payload %q", h, dl[0].Data())
	}
	// An alert event told on-call, and went to InfluxDB's alert measurement.
	ev := fetchAll(t, js, telemetry.StreamRollup, "megawatch.v1.alert.warning.ingest_field_conflict")
	if len(ev) != 1 {
		t.Fatalf("%d conflict alert events, want 1", len(ev))
	}
	waitFor(t, 30*time.Second, "alert point", func() bool {
		return influx.Count(t, "mw", `SELECT count(value) FROM alert WHERE rule = 'ingest_field_conflict' AND state = 'firing'`) == 1
	})
	stop()

	// The operator drops the shard (DROP SERIES does not clear a field's
	// type in 1.8); the next probe writes the field again.
	for _, s := range influx.Query(t, "", `SHOW SHARDS`) {
		if s.Name != "mw" {
			continue
		}
		for _, v := range s.Values {
			influx.Exec(t, "", "DROP SHARD "+toString(v[0]))
		}
	}
	cfg.ConflictProbe = 200 * time.Millisecond
	in, _, _ = startIngest(t, cfg, natsURL, nil)
	if err := in.Ready(); err != nil {
		t.Fatalf("fresh process not ready: %v", err)
	}
	// A fresh process learns the conflict again only if it still exists.
	for i := range nodes {
		publishReport(t, js, testReport(testLoc(i), uint64(windows+1), start.Add(time.Duration(windows)*time.Second), 8))
	}
	waitFor(t, 30*time.Second, "gpu points after the fix", func() bool {
		return influx.Count(t, "mw", `SELECT count(power_w) FROM gpu`) == nodes*8
	})
	if err := in.Ready(); err != nil {
		t.Errorf("Ready after the fix: %v", err)
	}
}

// TestFieldConflictRecovers: within one process, the remembered conflict
// clears when a probe finds InfluxDB takes the field again.
func TestFieldConflictRecovers(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.Exec(t, "", `CREATE DATABASE mw WITH SHARD DURATION 1h`)
	natsURL, js := natsInProcess(t)
	now := time.Now().Truncate(time.Second)
	end := now.Add(-30 * time.Second)
	// The conflicting value at the start of end's hour: the shard (1 h,
	// aligned to the hour) of the reports below, whatever the time of day
	// (one minute before `end` fell in the previous shard in the first
	// minute of an hour, and nothing conflicted).
	resp, err := http.Post(influx.URL+"/write?db=mw", "text/plain", strings.NewReader("gpu,gpu=0,hall=h1,node=other,rack=k,row=r,site=dc1 power_w=\"bad\" "+itoa(end.Truncate(time.Hour).UnixNano())+"\n"))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("seed conflict: %v %v", err, resp)
	}
	cfg := testConfig(influx.URL, "mw")
	cfg.ConflictProbe = 300 * time.Millisecond
	in, _, _ := startIngest(t, cfg, natsURL, nil)
	for i := range 5 {
		publishReport(t, js, testReport(testLoc(i), 1, end, 8))
	}
	waitFor(t, 30*time.Second, "conflict remembered", func() bool { return in.Ready() != nil })
	for _, s := range influx.Query(t, "", `SHOW SHARDS`) {
		if s.Name == "mw" {
			for _, v := range s.Values {
				influx.Exec(t, "", "DROP SHARD "+toString(v[0]))
			}
		}
	}
	// Keep reports coming: a probe lets their gpu lines through.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for w := 2; in.Ready() != nil; w++ {
		if ctx.Err() != nil {
			t.Fatalf("conflict not cleared: %v", in.Ready())
		}
		for i := range 5 {
			publishReport(t, js, testReport(testLoc(i), uint64(w), end.Add(time.Duration(w)*time.Second), 8))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := testutil.ToFloat64(in.m.conflicts.WithLabelValues("t", "gpu", "power_w")); got != 0 {
		t.Errorf("conflicts gauge %v after recovery", got)
	}
	waitFor(t, 30*time.Second, "resolved event", func() bool {
		return len(fetchAll(t, js, telemetry.StreamRollup, "megawatch.v1.alert.warning.ingest_field_conflict")) == 2
	})
}

func toString(v any) string { return fmt.Sprint(v) }

// fetchAll returns every message of stream on subject.
func fetchAll(t testing.TB, js jetstream.JetStream, stream, subject string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for {
		b, err := c.Fetch(500, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			out = append(out, m)
		}
		if n == 0 {
			return out
		}
	}
}

// TestConflictExpires: a conflict whose shard has ended is forgotten once
// no line has hit it for conflict_probe; one still hit is kept.
func TestConflictExpires(t *testing.T) {
	natsURL, _ := natsInProcess(t)
	cfg := testConfig("http://127.0.0.1:1", "mw")
	cfg.ConflictProbe = time.Minute
	in, err := New(cfg, connect(t, natsURL), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tg := in.targets[0]
	past := time.Now().Add(-time.Hour)
	c := &fieldConflict{measurement: "gpu", field: "power_w", got: "float", have: "string", bucket: "mw/autogen", start: past.Add(-time.Hour).UnixNano(), end: past.UnixNano()}
	tg.conflicts.add(c)
	c.lastHit.Store(time.Now().UnixNano())
	if err := in.Ready(); err == nil {
		t.Fatal("ready with a conflict hit just now")
	}
	c.lastHit.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	if err := in.Ready(); err != nil {
		t.Errorf("conflict of an ended shard, not hit for 2 min, still degrades: %v", err)
	}
	current := &fieldConflict{measurement: "gpu", field: "power_w", bucket: "mw/autogen", start: past.UnixNano(), end: time.Now().Add(time.Hour).UnixNano()}
	tg.conflicts.add(current)
	if err := in.Ready(); err == nil {
		t.Error("ready with a conflict in the current shard")
	}
}

// TestTwoFieldConflicts: InfluxDB 1.8 names only the first conflict of a
// request but drops the lines of both: the second is found by writing the
// rest again (one more request, once), then both are remembered.
func TestTwoFieldConflicts(t *testing.T) {
	influx := testenv.StartInfluxd(t)
	influx.Exec(t, "", `CREATE DATABASE mw`)
	natsURL, js := natsInProcess(t)
	now := time.Now().Truncate(time.Second)
	seed := "node,hall=h1,node=other,rack=k,row=r,site=dc1 gpus=\"bad\" " + itoa(now.Add(-time.Hour).UnixNano()) + "\n" +
		"gpu,gpu=0,hall=h1,node=other,rack=k,row=r,site=dc1 power_w=\"bad\" " + itoa(now.Add(-time.Hour).UnixNano()) + "\n"
	resp, err := http.Post(influx.URL+"/write?db=mw", "text/plain", strings.NewReader(seed))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("seed conflicts: %v %v", err, resp)
	}
	start := now.Add(-10 * time.Minute)
	if start.Truncate(7*24*time.Hour) != now.Add(-time.Hour).Truncate(7*24*time.Hour) {
		start = now.Add(-time.Hour + time.Second)
	}
	const nodes, windows = 20, 10
	for w := range windows {
		for i := range nodes {
			publishReport(t, js, testReport(testLoc(i), uint64(w+1), start.Add(time.Duration(w)*time.Second), 8))
		}
	}
	cfg := testConfig(influx.URL, "mw")
	cfg.BatchLines = 450 // 50 reports a batch
	cfg.Workers = 1
	cfg.ConflictProbe = time.Hour
	in, _, _ := startIngest(t, cfg, natsURL, nil)
	waitFor(t, 60*time.Second, "conflict dead letters", func() bool {
		return testutil.ToFloat64(in.m.deadLetter.WithLabelValues(ReasonConflict)) == nodes*windows
	})
	if n := testutil.ToFloat64(in.m.conflictLines.WithLabelValues("t", "node", "gpus")); n != nodes*windows {
		t.Errorf("node.gpus conflict lines %v, want %d", n, nodes*windows)
	}
	if n := testutil.ToFloat64(in.m.conflictLines.WithLabelValues("t", "gpu", "power_w")); n != nodes*windows*8 {
		t.Errorf("gpu.power_w conflict lines %v, want %d", n, nodes*windows*8)
	}
	batches := testutil.ToFloat64(in.m.batches.WithLabelValues("t"))
	requests := testutil.ToFloat64(in.m.requests.WithLabelValues("t"))
	t.Logf("%v batches, %v write requests", batches, requests)
	if requests > batches+1 {
		t.Errorf("%v write requests for %v batches: want one per batch, plus one to find the hidden conflict", requests, batches)
	}
	dl := fetchAll(t, js, telemetry.StreamDeadLetter, "megawatch.v1.deadletter.conflict")
	if len(dl) != nodes*windows || bytes.Count(dl[0].Data(), []byte("\n")) != 9 || !strings.Contains(dl[0].Headers().Get(HeaderDeadField), "node.gpus") || !strings.Contains(dl[0].Headers().Get(HeaderDeadField), "gpu.power_w") {
		t.Errorf("%d dead letters; first: %v %q", len(dl), dl[0].Headers(), dl[0].Data())
	}
}
