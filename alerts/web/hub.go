package web

import (
	"log/slog"
	"sync"
	"time"
)

// hub polls the source once per interval while clients are connected and
// hands each client the latest encoded snapshot (latest wins: a client that
// has not taken the previous one gets it replaced, never queued).
type hub struct {
	src      Source
	logger   *slog.Logger
	interval time.Duration

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	stop chan struct{} // closes the polling goroutine; nil while none runs
	wg   sync.WaitGroup
}

type subscriber struct {
	ch chan []byte // capacity 1
}

func newHub(src Source, logger *slog.Logger, interval time.Duration) *hub {
	return &hub{src: src, logger: logger, interval: interval, subs: make(map[*subscriber]struct{})}
}

func (h *hub) subscribe() *subscriber {
	s := &subscriber{ch: make(chan []byte, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	if h.stop == nil {
		h.stop = make(chan struct{})
		h.wg.Add(1)
		go h.run(h.stop)
	}
	return s
}

func (h *hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	if len(h.subs) == 0 && h.stop != nil {
		close(h.stop)
		h.stop = nil
	}
}

// clients is the number of connected /events clients.
func (h *hub) clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *hub) run(stop chan struct{}) {
	defer h.wg.Done()
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		body, err := encodeSnapshot(h.src.Snapshot())
		if err != nil {
			h.logger.Error("encode snapshot", "err", err)
			continue
		}
		h.broadcast(body)
	}
}

func (h *hub) broadcast(body []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select { // drop the snapshot the client has not taken yet
		case <-s.ch:
		default:
		}
		s.ch <- body // cannot block: only the hub sends, under h.mu
	}
}
