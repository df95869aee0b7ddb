package ingest

import (
	"bytes"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// BenchmarkPipeline is ingest's CPU per point without the network: decode,
// check, encode and gzip (level 1, 5,000-line batches) of simulated fleet
// reports — the part of the ≤ 3 µs/point budget that is ingest's own code.
func BenchmarkPipeline(b *testing.B) {
	const nodes = 200
	locs := fleetLocs(nodes)
	fleet := newFleet(b, locs)
	now := time.Now().Truncate(time.Second)
	type msg struct {
		subject string
		data    []byte
	}
	var msgs []msg
	var rep telemetry.NodeReport
	for w := range 5 {
		for i := range locs {
			fleet.Report(&rep, i, now.Add(time.Duration(w-5)*time.Second), time.Second, 100*time.Millisecond)
			data, _ := proto.Marshal(&rep)
			subj, _ := telemetry.PowerSubject(locs[i])
			msgs = append(msgs, msg{subj, data})
		}
	}
	tw := timeWindow{maxAge: time.Hour, skew: 5 * time.Minute}
	dec := newReportDecoder()
	enc := newLPEncoder(defaultLevels)
	enc.reset(make([]byte, 0, 1<<20))
	gz, _ := gzip.NewWriterLevel(nil, 1)
	var out bytes.Buffer
	lines, points := 0, 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := msgs[i%len(msgs)]
		r, err := dec.decode(m.data)
		if err != nil {
			b.Fatal(err)
		}
		if err := checkReport(m.subject, r, now, tw); err != nil {
			b.Fatal(err)
		}
		n, err := enc.report(r, true)
		if err != nil {
			b.Fatal(err)
		}
		lines += n
		points += n
		if lines >= 5000 {
			out.Reset()
			gz.Reset(&out)
			_, _ = gz.Write(enc.buf())
			_ = gz.Close()
			enc.reset(enc.buf())
			lines = 0
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(points), "ns/point")
}
