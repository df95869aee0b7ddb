// Package natsalert publishes alert events as protobuf AlertEvent to
// megawatch.v1.alert.<severity>.<rule>, which stream MEGAWATCH_ROLLUP
// captures so that ingest writes the `alert` measurement (Grafana
// annotations). The Nats-Msg-Id makes the two replicas' copies one message.
package natsalert

import (
	"context"
	"fmt"
	"strconv"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
)

// Notifier publishes with JetStream acks.
type Notifier struct{ js jetstream.JetStream }

// New publishes through js.
func New(js jetstream.JetStream) *Notifier { return &Notifier{js: js} }

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "nats" }

// Event converts an alert to its wire form.
func Event(a notify.Alert) *telemetry.AlertEvent {
	st := telemetry.AlertState_ALERT_STATE_FIRING
	if !a.Firing() {
		st = telemetry.AlertState_ALERT_STATE_RESOLVED
	}
	return &telemetry.AlertEvent{
		Rule: a.Rule, Severity: a.Severity, Level: a.Level, Domain: a.Domain, State: st,
		Value: a.Value, Threshold: a.Threshold, Message: a.Summary(),
		AtUnixNs: a.At.UnixNano(), ActiveSinceUnixNs: a.StartsAt.UnixNano(),
		Labels: a.Labels, Annotations: a.Annotations, Fingerprint: a.Fingerprint,
	}
}

// Notify implements notify.Notifier.
func (n *Notifier) Notify(ctx context.Context, alerts []notify.Alert) (bool, error) {
	for _, a := range alerts {
		subj, err := telemetry.AlertSubject(a.Severity, a.Rule)
		if err != nil {
			return false, fmt.Errorf("nats alert: %w", err)
		}
		data, err := proto.Marshal(Event(a))
		if err != nil {
			return false, fmt.Errorf("nats alert: encode: %w", err)
		}
		msg := nats.NewMsg(subj)
		msg.Data = data
		msg.Header.Set(telemetry.HeaderSchema, telemetry.SchemaVersion)
		msg.Header.Set(telemetry.HeaderMsgID, "alert:"+a.Fingerprint+":"+a.State+":"+strconv.FormatInt(a.At.UnixMilli(), 10))
		if _, err := n.js.PublishMsg(ctx, msg); err != nil {
			return true, fmt.Errorf("nats alert publish %s: %w", subj, err)
		}
	}
	return false, nil
}
