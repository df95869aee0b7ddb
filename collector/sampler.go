package collector

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/megawatch/megawatch/internal/telemetry"
	"google.golang.org/protobuf/proto"
)

// openWindow collects the results of one window until it is summarised.
type openWindow struct {
	end       int64 // Unix ns
	gpus      []gpuWindow
	endIssued []bool // the window-end request went to this GPU
	prime     bool   // the first boundary: only primes the energy counters
}

// sampler drives the GPU workers on wall-clock slot boundaries and turns
// their results into reports. All its state is owned by one goroutine
// (run); tick, accept and finalize are plain methods so that benchmarks and
// tests can drive them synchronously.
type sampler struct {
	window, slot, callTimeout int64 // ns
	slots                     int
	loc                       telemetry.Location
	subject                   string
	version                   string
	bootID                    uint64
	seq                       uint64

	gpus   []*gpuReader
	reqs   []chan request
	busy   []bool
	since  []int64 // tick of the request in flight
	energy []energyState

	started   bool
	cur, pend *openWindow
	results   chan result
	slotBuf   []uint32

	emit   func(entry)
	np     nodePowerReader // nil: no node power
	m      *metrics
	logger *slog.Logger
}

func newSampler(cfg Config, loc telemetry.Location, subject string, gpus []*gpuReader, bootID uint64, m *metrics, logger *slog.Logger, emit func(entry)) *sampler {
	s := &sampler{
		window: int64(cfg.Window), slot: int64(cfg.Slot), callTimeout: int64(cfg.CallTimeout),
		slots: cfg.slots(), loc: loc, subject: subject, version: cfg.Version, bootID: bootID,
		gpus: gpus, reqs: make([]chan request, len(gpus)), busy: make([]bool, len(gpus)),
		since: make([]int64, len(gpus)), energy: make([]energyState, len(gpus)),
		results: make(chan result, len(gpus)), slotBuf: make([]uint32, cfg.slots()),
		emit: emit, m: m, logger: logger,
	}
	for i := range s.reqs {
		s.reqs[i] = make(chan request, 1)
	}
	return s
}

// run starts one worker per GPU and samples until ctx ends. A worker stuck
// in a hung NVML call is left behind; it exits when the call returns.
func (s *sampler) run(ctx context.Context) {
	for i, g := range s.gpus {
		go g.run(ctx, s.reqs[i], s.results)
	}
	next := (time.Now().UnixNano()/s.slot + 1) * s.slot
	timer := time.NewTimer(time.Until(time.Unix(0, next)))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-s.results:
			s.accept(r)
		case <-timer.C:
			s.tick(next)
			// Skip boundaries that have passed (a stalled process): those
			// slots are missing, not sampled late.
			now := time.Now().UnixNano()
			next += s.slot
			if next <= now {
				next = (now/s.slot + 1) * s.slot
			}
			timer.Reset(time.Duration(next - now))
		}
	}
}

// tick handles slot boundary t (Unix ns): it finalises the pending window
// once its deadline passed and sends a request to every idle GPU.
func (s *sampler) tick(t int64) {
	if s.pend != nil && t >= s.pend.end+s.callTimeout {
		s.finalize(s.pend)
	}
	end := (t + s.window - 1) / s.window * s.window
	isEnd := t == end
	if !s.started {
		if !isEnd {
			return // wait for the first window boundary
		}
		s.started = true
		s.cur = s.newWindow(end)
		s.cur.prime = true
	}
	if s.cur == nil || s.cur.end != end {
		if s.cur != nil {
			s.retire(s.cur) // its end boundary was skipped
		}
		s.cur = s.newWindow(end)
	}
	w := s.cur
	for i := range s.gpus {
		if s.busy[i] {
			if t-s.since[i] >= s.callTimeout {
				s.markTimeout(w, i)
				if s.pend != nil {
					s.markTimeout(s.pend, i)
				}
			}
			continue
		}
		s.busy[i], s.since[i] = true, t
		s.reqs[i] <- request{tick: t, end: isEnd}
		if isEnd {
			w.endIssued[i] = true
		}
	}
	if isEnd {
		s.cur = nil
		s.retire(w)
	}
}

func (s *sampler) newWindow(end int64) *openWindow {
	w := &openWindow{end: end, gpus: make([]gpuWindow, len(s.gpus)), endIssued: make([]bool, len(s.gpus))}
	for i := range w.gpus {
		w.gpus[i].index = uint32(s.gpus[i].index)
	}
	return w
}

// retire moves a window whose end has passed to pending.
func (s *sampler) retire(w *openWindow) {
	if s.pend != nil {
		s.finalize(s.pend)
	}
	s.pend = w
	s.maybeComplete()
}

// maybeComplete finalises the pending window once every GPU that was asked
// for its window-end readings has answered.
func (s *sampler) maybeComplete() {
	w := s.pend
	if w == nil {
		return
	}
	for i := range w.gpus {
		if w.endIssued[i] && !w.gpus[i].haveEnd && w.gpus[i].health == telemetry.Health_HEALTH_OK {
			return
		}
	}
	s.finalize(w)
}

func (s *sampler) markTimeout(w *openWindow, i int) {
	g := &w.gpus[i]
	if g.health != telemetry.Health_HEALTH_OK {
		return
	}
	g.health = telemetry.Health_HEALTH_TIMEOUT
	g.errText = fmt.Sprintf("NVML call did not return within %s", time.Duration(s.callTimeout))
	if !w.prime {
		s.gpus[i].m.errTimeout.Inc()
	}
}

// windowFor returns the open window that slot boundary t belongs to.
func (s *sampler) windowFor(t int64) *openWindow {
	end := (t + s.window - 1) / s.window * s.window
	for _, w := range []*openWindow{s.cur, s.pend} {
		if w != nil && w.end == end {
			return w
		}
	}
	return nil
}

// accept stores a worker's result in its window.
func (s *sampler) accept(r result) {
	s.busy[r.gpu] = false
	w := s.windowFor(r.req.tick)
	if w == nil {
		return // its window is already summarised
	}
	g := &w.gpus[r.gpu]
	switch {
	case r.elapsed >= time.Duration(s.callTimeout):
		s.markTimeout(w, r.gpu)
	case r.lost:
		g.health, g.errText = telemetry.Health_HEALTH_LOST, r.errText
	default:
		k := int((r.req.tick-(w.end-s.window))/s.slot) - 1
		if r.powerOK && k >= 0 && k < s.slots {
			g.slotMW[k] = r.powerMW
			g.slotOK |= 1 << k
		} else if r.powerErr != nvml.SUCCESS && r.powerErr != nvml.ERROR_NOT_SUPPORTED {
			g.powerErr = r.errText
		}
		if r.throttleOK {
			g.throttle |= r.throttle
			g.throttleSeen = true
		}
		if r.req.end {
			g.haveEnd = true
			g.end = r.endReadings
		}
	}
	if w == s.pend {
		s.maybeComplete()
	}
}

// finalize summarises a window and emits its report.
func (s *sampler) finalize(w *openWindow) {
	if w == s.pend {
		s.pend = nil
	}
	for i := range w.gpus {
		g := &w.gpus[i]
		if !g.haveEnd && w.endIssued[i] {
			s.markTimeout(w, i) // asked, and not answered by the deadline
		}
	}
	if w.prime {
		for i := range w.gpus {
			summarize(&s.energy[i], &w.gpus[i], time.Duration(s.window))
		}
		return
	}
	s.seq++
	inventory := (s.seq-1)%60 == 0
	rep := &telemetry.NodeReport{
		Site: s.loc.Site, Hall: s.loc.Hall, Row: s.loc.Row, Rack: s.loc.Rack, Node: s.loc.Node,
		WindowEndUnixNs: w.end, WindowMs: uint32(s.window / 1e6), SlotMs: uint32(s.slot / 1e6),
		Seq: s.seq, BootId: s.bootID, Gpus: make([]*telemetry.Gpu, len(w.gpus)),
	}
	rep.SlotMissingMask = nodeSlots(w.gpus, s.slots, s.slotBuf)
	rep.SlotPowerW = append([]uint32(nil), s.slotBuf...)
	if inventory {
		rep.Version = s.version
	}
	for i := range w.gpus {
		g := &w.gpus[i]
		if inventory {
			g.uuid, g.model = s.gpus[i].uuid, s.gpus[i].model
		}
		rep.Gpus[i] = summarize(&s.energy[i], g, time.Duration(s.window))
	}
	s.nodePower(rep)
	data, err := proto.Marshal(rep)
	if err != nil {
		s.logger.Error("encode report", "node", s.loc.Node, "err", err)
		return
	}
	s.m.windows.Inc()
	s.emit(entry{subject: s.subject, msgID: telemetry.MsgID(s.loc.Node, w.end), data: data})
}
