package ingest

import (
	"bytes"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/klauspost/compress/gzip"
	"github.com/megawatch/megawatch/internal/plausible"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// BenchmarkPipeline is ingest's CPU per point without the network: decode,
// check, encode and gzip (level 1, 5,000-line batches) of simulated fleet
// reports. path=megawatch is ingest's hot path; path=libraries, the
// baseline, is proto.Unmarshal and line-protocol/v2's Encoder field by field.
func BenchmarkPipeline(b *testing.B) {
	locs := fleetLocs(200)
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
	bounds := plausible.Default()
	// run feeds every message through decode, checkReport and encode (which
	// appends to buf and returns it), gzipping every 5,000 lines.
	run := func(b *testing.B, decode func([]byte) (*telemetry.NodeReport, error), encode func(buf []byte, r *telemetry.NodeReport) []byte) {
		buf := make([]byte, 0, 1<<20)
		gz, _ := gzip.NewWriterLevel(nil, 1)
		var out bytes.Buffer
		lines, points := 0, 0
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			m := msgs[i%len(msgs)]
			r, err := decode(m.data)
			if err != nil {
				b.Fatal(err)
			}
			if err := checkReport(m.subject, r, now, tw, &bounds); err != nil {
				b.Fatal(err)
			}
			buf = encode(buf, r)
			lines += 1 + len(r.Gpus)
			points += 1 + len(r.Gpus)
			if lines >= 5000 {
				out.Reset()
				gz.Reset(&out)
				_, _ = gz.Write(buf)
				_ = gz.Close()
				buf, lines = buf[:0], 0
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(points), "ns/point")
	}
	b.Run("path=megawatch", func(b *testing.B) {
		dec := newReportDecoder()
		enc := newLPEncoder(defaultLevels)
		run(b, dec.decode, func(buf []byte, r *telemetry.NodeReport) []byte {
			enc.enc.SetBuffer(buf) // append to buf (reset would truncate it)
			if _, err := enc.report(r, true); err != nil {
				b.Fatal(err)
			}
			return enc.buf()
		})
	})
	b.Run("path=libraries", func(b *testing.B) {
		var r telemetry.NodeReport
		var e lineprotocol.Encoder
		e.SetPrecision(lineprotocol.Nanosecond)
		run(b, func(data []byte) (*telemetry.NodeReport, error) { return &r, proto.Unmarshal(data, &r) },
			func(buf []byte, r *telemetry.NodeReport) []byte {
				e.SetBuffer(buf)
				refAppend(&e, r, true)
				if err := e.Err(); err != nil {
					b.Fatal(err)
				}
				return e.Bytes()
			})
	})
}
