package alerts

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/testenv"
)

// TestForgedMsgIDIsNotSummed: a report whose Nats-Msg-Id names another
// node (node A publishing B's id on its own subject, so that JetStream's
// dedup would drop B's real report) is refused by the aggregator and
// counted, and the real reports around it are summed as usual.
func TestForgedMsgIDIsNotSummed(t *testing.T) {
	testenv.Short(t)
	w := newWorld(t, nil, []rules.Rule{{
		Name: "hall_coverage_low", Level: "hall", Metric: rules.MetricCoverage, Threshold: f(0.98), Clear: f(0.99),
		For: 3 * time.Second, Severity: "warning",
	}})
	w.startEngine()
	w.window(1)

	nodes := w.topo.Nodes()
	var rep telemetry.NodeReport
	w.fleet.Report(&rep, 0, w.end(2), time.Second, 100*time.Millisecond)
	b, err := proto.Marshal(&rep)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := telemetry.PowerSubject(nodes[0].Location)
	m := nats.NewMsg(subj)
	m.Data = b
	m.Header.Set(telemetry.HeaderMsgID, telemetry.MsgID(nodes[1].Location.Node, w.end(2).UnixNano()))
	if err := w.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the forged report to be refused", func() bool { return w.eng.agg.Stats().Forged == 1 })

	w.window(2) // every node's real report, node 0's included
	st := w.eng.agg.Stats()
	if st.Forged != 1 || st.Accepted != w.sent || st.Decode != 0 {
		t.Fatalf("stats %+v: want 1 forged and every one of the %d real reports accepted", st, w.sent)
	}
}
