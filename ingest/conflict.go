package ingest

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Field type conflicts. InfluxDB fixes a field's type per shard: once
// another writer stored gpu.power_w as a string, every float power_w in
// that shard is refused until the shard ends (7 days by default) or the
// series is dropped. InfluxDB stores the other lines of the request and
// answers 400 "partial write: field type conflict: input field "power_w" on
// measurement "gpu" is type float, already exists as type string dropped=N"
// (1.x and 2.x; 3.x lists the refused lines in "data"). Ingest counts the
// stored lines as written, dead-letters only the refused ones (reason
// conflict, as line protocol) and remembers the conflict (measurement,
// field, shard time range), so later batches route those lines straight to
// the dead-letter stream instead of costing a rejected request each. Every
// conflict_probe one batch tries them again; once InfluxDB takes them the
// conflict is over.

// reConflict matches 1.x/2.x conflict text.
var reConflict = regexp.MustCompile(`field type conflict: input field "((?:[^"\\]|\\.)*)" on measurement "((?:[^"\\]|\\.)*)" is type (\w+), already exists as type (\w+)`)

var reDropped = regexp.MustCompile(`dropped=(\d+)`)

// re3xColumn matches a 3.x per-line error about a column's type.
var re3xColumn = regexp.MustCompile(`column '([^']+)'`)

// conflictAnswer is a parsed field type conflict answer.
type conflictAnswer struct {
	field, measurement, got, have string
	dropped                       int // -1 unknown
}

// parseConflict parses InfluxDB 1.x/2.x field type conflict text.
func parseConflict(msg string) (conflictAnswer, bool) {
	m := reConflict.FindStringSubmatch(msg)
	if m == nil {
		return conflictAnswer{}, false
	}
	c := conflictAnswer{field: unescapeQuoted(m[1]), measurement: unescapeQuoted(m[2]), got: m[3], have: m[4], dropped: -1}
	if d := reDropped.FindStringSubmatch(msg); d != nil {
		if n, err := strconv.Atoi(d[1]); err == nil {
			c.dropped = n
		}
	}
	return c, true
}

func unescapeQuoted(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fieldConflict is one remembered conflict.
type fieldConflict struct {
	lane               int
	measurement, field string
	got, have          string
	bucket             string
	// [start, end) in ns: the shard's time range; end 0 = unknown (all time).
	start, end int64
	since      time.Time
	probeAt    time.Time // next time its lines are tried again
	lines      atomic.Int64
	lastHit    atomic.Int64 // unix ns of the last line routed for it
}

// hit counts one line routed to the dead-letter stream for c.
func (c *fieldConflict) hit() {
	c.lines.Add(1)
	c.lastHit.Store(time.Now().UnixNano())
}

func (c *fieldConflict) covers(ts int64) bool {
	return c.end == 0 || (ts >= c.start && ts < c.end)
}

func (c *fieldConflict) String() string {
	r := "all time"
	if c.end != 0 {
		r = time.Unix(0, c.start).UTC().Format(time.RFC3339) + ".." + time.Unix(0, c.end).UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s.%s in %s (shard %s): ingest writes %s, InfluxDB has %s", c.measurement, c.field, c.bucket, r, c.got, c.have)
}

// conflictSet is a target's remembered conflicts.
type conflictSet struct {
	mu     sync.Mutex
	list   []*fieldConflict
	active atomic.Int32 // len(list), read without the lock on the hot path
}

func (s *conflictSet) snapshot() []*fieldConflict {
	if s.active.Load() == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fieldConflict(nil), s.list...)
}

// add remembers c unless an equal one is known; it returns the one kept and
// whether it is new.
func (s *conflictSet) add(c *fieldConflict) (*fieldConflict, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.list {
		if o.lane == c.lane && o.measurement == c.measurement && o.field == c.field && o.start == c.start && o.end == c.end {
			return o, false
		}
	}
	s.list = append(s.list, c)
	s.active.Store(int32(len(s.list)))
	return c, true
}

func (s *conflictSet) remove(c *fieldConflict) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.list {
		if o == c {
			s.list = append(s.list[:i], s.list[i+1:]...)
			s.active.Store(int32(len(s.list)))
			return true
		}
	}
	return false
}

// A line of our own encoding: measurement[,tags] fields timestamp\n. Tag
// values are escaped (no unescaped space or comma), field keys are ours.

// lineMeasurement returns the measurement of line (up to the first
// unescaped ',' or ' ').
func lineMeasurement(line []byte) []byte {
	for i := 0; i < len(line); i++ {
		switch line[i] {
		case '\\':
			i++
		case ',', ' ':
			return line[:i]
		}
	}
	return line
}

// lineFields returns the field section of line and its timestamp.
func lineFields(line []byte) (fields []byte, ts int64, ok bool) {
	line = bytes.TrimRight(line, "\n")
	sp := -1
	for i := 0; i < len(line); i++ {
		if line[i] == '\\' {
			i++
			continue
		}
		if line[i] == ' ' {
			sp = i
			break
		}
	}
	last := bytes.LastIndexByte(line, ' ')
	if sp < 0 || last <= sp {
		return nil, 0, false
	}
	ts, err := strconv.ParseInt(string(line[last+1:]), 10, 64)
	if err != nil {
		return nil, 0, false
	}
	return line[sp+1 : last], ts, true
}

// hasField reports whether the field section has key field (our keys need
// no escaping; string values are only in alert messages, which are
// matched by key position after a ',' or at the start).
func hasField(fields []byte, field string) bool {
	for i := 0; i < len(fields); {
		j := i
		for j < len(fields) && fields[j] != '=' {
			j++
		}
		if string(fields[i:j]) == field {
			return true
		}
		// skip the value: a quoted string may hold commas
		j++
		if j < len(fields) && fields[j] == '"' {
			j++
			for j < len(fields) && fields[j] != '"' {
				if fields[j] == '\\' {
					j++
				}
				j++
			}
			j++
		}
		for j < len(fields) && fields[j] != ',' {
			j++
		}
		i = j + 1
	}
	return false
}

// lineHits reports whether line carries c's measurement and field at a
// time in c's range.
func lineHits(line []byte, measurement, field string, c *fieldConflict) bool {
	if string(lineMeasurement(line)) != measurement {
		return false
	}
	fields, ts, ok := lineFields(line)
	if !ok || !hasField(fields, field) {
		return false
	}
	return c == nil || c.covers(ts)
}

// shardRange is the shard group [start, end) that ts falls in for shard
// duration d (InfluxDB truncates the timestamp to the duration); 0, 0 when
// d is unknown.
func shardRange(ts int64, d time.Duration) (int64, int64) {
	if d <= 0 {
		return 0, 0
	}
	start := time.Unix(0, ts).UTC().Truncate(d)
	return start.UnixNano(), start.Add(d).UnixNano()
}
