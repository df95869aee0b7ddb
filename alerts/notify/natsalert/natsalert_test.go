package natsalert

import (
	"context"
	"testing"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// Alert events land in MEGAWATCH_ROLLUP on megawatch.v1.alert.<severity>.<rule>;
// the same event sent twice (two replicas) is stored once.
func TestEventsReachTheRollupStream(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv.URL())
	js := natstest.JetStream(t, nc)
	ctx := context.Background()
	st, err := natsx.EnsureStream(ctx, js, natsx.DefaultStreamsConfig().RollupStream())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 27, 1, 0, 0, 0, time.UTC)
	a := notify.Alert{Rule: "site_ramp", Severity: "critical", Level: "site", Domain: "dc1", State: notify.StateFiring, Value: 25, Threshold: 20,
		Labels: map[string]string{"team": "facility"}, Annotations: map[string]string{"summary": "ramp"}, StartsAt: t0, At: t0, Fingerprint: "fp"}
	n := New(js)
	for range 2 {
		if _, err := n.Notify(ctx, []notify.Alert{a}); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := st.GetLastMsgForSubject(ctx, "megawatch.v1.alert.critical.site_ramp")
	if err != nil {
		t.Fatal(err)
	}
	var ev telemetry.AlertEvent
	if err := proto.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetRule() != "site_ramp" || ev.GetState() != telemetry.AlertState_ALERT_STATE_FIRING || ev.GetValue() != 25 || ev.GetThreshold() != 20 ||
		ev.GetDomain() != "dc1" || ev.GetFingerprint() != "fp" || ev.GetAtUnixNs() != t0.UnixNano() || ev.GetLabels()["team"] != "facility" || ev.GetMessage() != "ramp" {
		t.Fatalf("event %v", &ev)
	}
	info, _ := st.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages, want 1 (deduplicated)", info.State.Msgs)
	}
}
