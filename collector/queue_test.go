package collector

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

func testEntry(seq int) entry {
	data, _ := proto.Marshal(&telemetry.NodeReport{Node: testLoc.Node, Seq: uint64(seq)})
	return entry{subject: "megawatch.v1.power.dc1.h1.r01.rk01." + testLoc.Node, msgID: fmt.Sprintf("%s:%d", testLoc.Node, seq), data: data}
}

func seqOf(t *testing.T, e entry) (uint64, bool) {
	t.Helper()
	var r telemetry.NodeReport
	if err := proto.Unmarshal(e.data, &r); err != nil {
		t.Fatal(err)
	}
	return r.Seq, r.Replayed
}

// drain sends and commits every entry, returning their seqs.
func drain(t *testing.T, q *queue) []uint64 {
	var out []uint64
	for {
		e, ok := q.next()
		if !ok {
			return out
		}
		s, _ := seqOf(t, e)
		out = append(out, s)
		q.commit()
	}
}

func TestQueueDropsOldestKeepsNewest(t *testing.T) {
	q := newQueue(5, 1<<20, nil)
	dropped := 0
	for i := 1; i <= 12; i++ {
		n, err := q.push(testEntry(i))
		if err != nil {
			t.Fatal(err)
		}
		dropped += n
	}
	if dropped != 7 || q.len() != 5 {
		t.Fatalf("dropped %d, len %d; want 7, 5", dropped, q.len())
	}
	if got := drain(t, q); fmt.Sprint(got) != "[8 9 10 11 12]" {
		t.Errorf("kept %v, want the newest 8..12", got)
	}
}

func TestQueueByteBound(t *testing.T) {
	e := testEntry(1)
	q := newQueue(1000, int64(3*len(e.data)), nil)
	for i := 1; i <= 10; i++ {
		q.push(testEntry(i))
	}
	if q.len() != 3 {
		t.Errorf("len %d, want 3 (byte bound)", q.len())
	}
}

func TestQueueRewindResendsInOrderFlagged(t *testing.T) {
	q := newQueue(100, 1<<20, nil)
	for i := 1; i <= 4; i++ {
		q.push(testEntry(i))
	}
	a, _ := q.next()
	q.next()
	q.next()
	q.commit() // 1 acked
	q.rewind() // 2 and 3 failed
	if s, _ := seqOf(t, a); s != 1 {
		t.Fatalf("first sent %d", s)
	}
	for want := uint64(2); want <= 4; want++ {
		e, ok := q.next()
		if !ok {
			t.Fatalf("missing %d", want)
		}
		s, replayed := seqOf(t, e)
		if s != want || !replayed {
			t.Errorf("got seq %d replayed %v, want %d replayed", s, replayed, want)
		}
	}
	// In-flight entries are never dropped by the bound.
	q2 := newQueue(2, 1<<20, nil)
	q2.push(testEntry(1))
	q2.next()
	q2.push(testEntry(2))
	q2.push(testEntry(3))
	if q2.len() != 3 {
		t.Errorf("in-flight entry dropped: len %d", q2.len())
	}
	q2.commit()
	if got := drain(t, q2); fmt.Sprint(got) != "[2 3]" {
		t.Errorf("after commit %v", got)
	}
}

func TestDiskLogSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	d, old, err := openDiskLog(dir, 4, logger)
	if err != nil || len(old) != 0 {
		t.Fatalf("open: %v %d", err, len(old))
	}
	q := newQueue(100, 1<<20, d)
	for i := 1; i <= 10; i++ {
		if _, err := q.push(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 { // 1..5 delivered
		q.next()
		q.commit()
	}
	q.next() // 6 in flight when the process dies
	if err := d.close(); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 2 {
		t.Errorf("%d segments left, want 2 (the delivered one removed)", len(segs))
	}

	d2, old, err := openDiskLog(dir, 4, logger)
	if err != nil {
		t.Fatal(err)
	}
	q2 := newQueue(100, 1<<20, d2)
	q2.load(old)
	q2.push(testEntry(11))
	var got []uint64
	for {
		e, ok := q2.next()
		if !ok {
			break
		}
		s, replayed := seqOf(t, e)
		if s <= 10 && !replayed {
			t.Errorf("seq %d from disk not flagged replayed", s)
		}
		if e.msgID != fmt.Sprintf("%s:%d", testLoc.Node, s) || e.subject != testEntry(1).subject {
			t.Errorf("seq %d: subject %q msg id %q", s, e.subject, e.msgID)
		}
		got = append(got, s)
		q2.commit()
	}
	if fmt.Sprint(got) != "[6 7 8 9 10 11]" {
		t.Errorf("replayed %v, want 6..11", got)
	}
	d2.close()
	d3, old, err := openDiskLog(dir, 4, logger)
	if err != nil || len(old) != 0 {
		t.Errorf("after everything was delivered: %d entries left, err %v", len(old), err)
	}
	d3.close()
}

func TestDiskLogTornTail(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.DiscardHandler)
	d, _, err := openDiskLog(dir, 100, logger)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		d.append(testEntry(i))
	}
	d.close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	f, err := os.OpenFile(segs[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{200, 0, 0, 0, 1, 2}) // a frame cut short by a crash
	f.Close()
	d2, old, err := openDiskLog(dir, 100, logger)
	if err != nil || len(old) != 3 {
		t.Fatalf("torn tail: %d entries, err %v; want 3", len(old), err)
	}
	if err := d2.append(testEntry(4)); err != nil {
		t.Fatal(err)
	}
	d2.close()
	_, old, err = openDiskLog(dir, 100, logger)
	if err != nil || len(old) != 4 {
		t.Errorf("after appending past a torn tail: %d entries, err %v; want 4", len(old), err)
	}
}

// BenchmarkBufferReport: one report through the collector's buffer, pushed
// and then acknowledged (push, next, commit). With buffer_dir the report is
// appended and fsynced and the head file rewritten (what the collector does
// once a second); the memory-only buffer (buffer_dir "") is the baseline.
func BenchmarkBufferReport(b *testing.B) {
	e := testEntry(1)
	run := func(b *testing.B, disk *diskLog) {
		q := newQueue(1000, 1<<20, disk)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := q.push(e); err != nil {
				b.Fatal(err)
			}
			if _, ok := q.next(); !ok {
				b.Fatal("queue empty")
			}
			q.commit()
		}
	}
	b.Run("buffer=disk", func(b *testing.B) {
		d, _, err := openDiskLog(b.TempDir(), 256, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		defer d.close()
		run(b, d)
	})
	b.Run("buffer=memory", func(b *testing.B) { run(b, nil) })
}
