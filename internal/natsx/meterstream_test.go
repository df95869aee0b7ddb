package natsx_test

import (
	"context"
	"testing"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/natsx/natstest"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
)

// Meter reports land in MEGAWATCH_METER, and a second publish of the same
// meter window (an HA poller) is a duplicate.
func TestMeterStreamDedup(t *testing.T) {
	s := natstest.RunServer(t)
	js := natstest.JetStream(t, natstest.Connect(t, s.URL()))
	ctx := context.Background()
	if err := natsx.EnsureStreams(ctx, js, natsx.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	subj, err := telemetry.MeterSubject([]string{"dc1", "h1"}, "swgr-h1")
	if err != nil {
		t.Fatal(err)
	}
	id := telemetry.MeterMsgID("swgr-h1", 1_700_000_000_000_000_000)
	for i, wantDup := range []bool{false, true} {
		msg := &nats.Msg{Subject: subj, Header: nats.Header{}, Data: []byte{byte(i)}}
		msg.Header.Set(telemetry.HeaderMsgID, id)
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if ack.Stream != telemetry.StreamMeter || ack.Duplicate != wantDup {
			t.Fatalf("publish %d: ack %+v, want stream %s duplicate %v", i, ack, telemetry.StreamMeter, wantDup)
		}
	}
	st, err := js.Stream(ctx, telemetry.StreamMeter)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 || info.Config.Duplicates != natsx.DefaultStreamsConfig().DuplicateWindow {
		t.Fatalf("stream state %+v, config dup %v", info.State, info.Config.Duplicates)
	}
}
