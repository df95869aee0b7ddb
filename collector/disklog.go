package collector

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// diskLog persists the buffer as append-only segment files in a directory
// so that reports survive a collector restart:
//
//	<dir>/<first index, 20 digits>.seg   frames: u32 len | u32 crc32c | body
//	<dir>/head                           index of the oldest live entry
//
// body is u16 len | subject | u16 len | msg id | report. A torn or corrupt
// frame ends its segment (the rest is ignored). Fully consumed segments are
// deleted. The queue holds the same entries in memory and bounds both.
type diskLog struct {
	dir     string
	segMax  int       // entries per segment
	segs    []segment // oldest first; the last one is being written
	off     int       // live entries of segs[0] start here
	f       *os.File  // open last segment, nil until the first append
	nextIdx uint64
	buf     []byte
	logger  *slog.Logger
}

type segment struct {
	first uint64
	n     int
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const (
	segSuffix    = ".seg"
	headFile     = "head"
	frameHdr     = 8
	maxFrameBody = 1 << 20
)

// openDiskLog opens (creating) dir and returns the entries a previous
// process left undelivered, oldest first.
func openDiskLog(dir string, segMax int, logger *slog.Logger) (*diskLog, []entry, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("buffer_dir: %w", err)
	}
	d := &diskLog{dir: dir, segMax: segMax, logger: logger}
	head, haveHead, err := d.readHead()
	if err != nil {
		return nil, nil, err
	}
	names, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		return nil, nil, fmt.Errorf("buffer_dir: %w", err)
	}
	var firsts []uint64
	for _, n := range names {
		v, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), segSuffix), 10, 64)
		if err == nil {
			firsts = append(firsts, v)
		}
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	var out []entry
	for _, first := range firsts {
		es, err := d.readSegment(first)
		if err != nil {
			return nil, nil, err
		}
		n := len(es)
		skip := 0
		if haveHead && head > first {
			skip = int(min(head-first, uint64(n)))
		}
		if skip == n {
			if err := os.Remove(d.segPath(first)); err != nil {
				return nil, nil, fmt.Errorf("buffer_dir: %w", err)
			}
			continue
		}
		if len(d.segs) == 0 {
			d.off = skip
		} else {
			skip = 0
		}
		d.segs = append(d.segs, segment{first: first, n: n})
		out = append(out, es[skip:]...)
		d.nextIdx = max(d.nextIdx, first+uint64(n))
	}
	d.nextIdx = max(d.nextIdx, head)
	return d, out, nil
}

func (d *diskLog) segPath(first uint64) string {
	return filepath.Join(d.dir, fmt.Sprintf("%020d%s", first, segSuffix))
}

func (d *diskLog) readHead() (uint64, bool, error) {
	b, err := os.ReadFile(filepath.Join(d.dir, headFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("buffer_dir: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		d.logger.Warn("buffer head file unreadable, replaying every segment", "dir", d.dir, "err", err)
		return 0, false, nil
	}
	return v, true, nil
}

// readSegment returns the valid frames of one segment.
func (d *diskLog) readSegment(first uint64) ([]entry, error) {
	b, err := os.ReadFile(d.segPath(first))
	if err != nil {
		return nil, fmt.Errorf("buffer_dir: %w", err)
	}
	var out []entry
	for len(b) > 0 {
		e, n, err := decodeFrame(b)
		if err != nil {
			d.logger.Warn("buffer segment truncated", "segment", d.segPath(first), "entries", len(out), "err", err)
			break
		}
		out = append(out, e)
		b = b[n:]
	}
	return out, nil
}

func decodeFrame(b []byte) (entry, int, error) {
	if len(b) < frameHdr {
		return entry{}, 0, io.ErrUnexpectedEOF
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > maxFrameBody || len(b) < frameHdr+n {
		return entry{}, 0, io.ErrUnexpectedEOF
	}
	body := b[frameHdr : frameHdr+n]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[4:]) {
		return entry{}, 0, errors.New("checksum mismatch")
	}
	subj, rest, ok := cutString(body)
	if !ok {
		return entry{}, 0, errors.New("bad subject")
	}
	id, rest, ok := cutString(rest)
	if !ok {
		return entry{}, 0, errors.New("bad message id")
	}
	return entry{subject: subj, msgID: id, data: append([]byte(nil), rest...)}, frameHdr + n, nil
}

func cutString(b []byte) (string, []byte, bool) {
	if len(b) < 2 {
		return "", nil, false
	}
	n := int(binary.LittleEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, false
	}
	return string(b[2 : 2+n]), b[2+n:], true
}

// append writes one entry to the current segment, starting a new segment
// every segMax entries.
func (d *diskLog) append(e entry) error {
	if d.f == nil || d.segs[len(d.segs)-1].n >= d.segMax {
		if err := d.rotate(); err != nil {
			return err
		}
	}
	b := d.buf[:0]
	b = append(b, make([]byte, frameHdr)...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.subject)))
	b = append(b, e.subject...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.msgID)))
	b = append(b, e.msgID...)
	b = append(b, e.data...)
	body := b[frameHdr:]
	binary.LittleEndian.PutUint32(b, uint32(len(body)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(body, crcTable))
	d.buf = b
	if _, err := d.f.Write(b); err != nil {
		// A partial frame may be on disk: close this segment (its valid
		// frames stay readable) and start the next append in a new one.
		last := d.segs[len(d.segs)-1]
		d.f.Close()
		d.f = nil
		if last.n == 0 {
			os.Remove(d.segPath(last.first))
			d.segs = d.segs[:len(d.segs)-1]
		}
		return fmt.Errorf("buffer_dir: write: %w", err)
	}
	d.segs[len(d.segs)-1].n++
	d.nextIdx++
	// One fsync per report (one a second): the backlog of a NATS outage
	// survives a power cut too, not only a process restart.
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("buffer_dir: fsync: %w", err)
	}
	return nil
}

func (d *diskLog) rotate() error {
	if d.f != nil {
		if err := d.f.Close(); err != nil {
			return fmt.Errorf("buffer_dir: %w", err)
		}
		d.f = nil
	}
	f, err := os.OpenFile(d.segPath(d.nextIdx), os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("buffer_dir: %w", err)
	}
	d.f = f
	syncDir(d.dir) // the new segment's directory entry
	if len(d.segs) == 0 {
		d.off = 0
	}
	d.segs = append(d.segs, segment{first: d.nextIdx})
	return nil
}

// advance forgets the n oldest live entries (delivered or dropped),
// deleting segments that are used up and recording the new head.
func (d *diskLog) advance(n int) {
	for n > 0 && len(d.segs) > 0 {
		s := &d.segs[0]
		take := min(n, s.n-d.off)
		d.off += take
		n -= take
		if d.off < s.n || (len(d.segs) == 1 && d.f != nil) {
			break // partly used, or the segment being written
		}
		if err := os.Remove(d.segPath(s.first)); err != nil {
			d.logger.Warn("buffer segment not removed", "err", err)
		}
		d.segs = d.segs[1:]
		d.off = 0
	}
	head := d.nextIdx
	if len(d.segs) > 0 {
		head = d.segs[0].first + uint64(d.off)
	}
	tmp := filepath.Join(d.dir, headFile+".tmp")
	if err := os.WriteFile(tmp, strconv.AppendUint(nil, head, 10), 0o640); err != nil {
		d.logger.Warn("buffer head not written", "err", err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, headFile)); err != nil {
		d.logger.Warn("buffer head not written", "err", err)
	}
}

// syncDir makes created and renamed files in dir durable (best effort: not
// every filesystem supports fsync on a directory).
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		f.Close()
	}
}

func (d *diskLog) close() error {
	if d.f == nil {
		return nil
	}
	err := d.f.Close()
	d.f = nil
	return err
}
