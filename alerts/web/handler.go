package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"time"
)

//go:embed static
var static embed.FS

// writeTimeout bounds one SSE write: a client that cannot take a snapshot
// in this time is disconnected instead of holding its goroutine forever.
const writeTimeout = 10 * time.Second

// Handler serves the live page:
//
//	GET /              the page (HTML, CSS and JS embedded; no external assets)
//	GET /events        server-sent events: one "snapshot" event (Snapshot JSON) every interval
//	GET /api/snapshot  the current Snapshot as JSON
//
// One goroutine per Handler polls src, and only while at least one /events
// client is connected; each client gets the latest snapshot and skips the
// ones it was too slow to take, so a slow client never blocks the source or
// the other clients.
func Handler(src Source, logger *slog.Logger, interval time.Duration) http.Handler {
	if interval <= 0 {
		interval = time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{src: src, logger: logger, hub: newHub(src, logger, interval)}
	assets, err := fs.Sub(static, "static")
	if err != nil { // cannot happen: the directory is embedded
		panic(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(assets)))
	mux.HandleFunc("GET /events", h.events)
	mux.HandleFunc("GET /api/snapshot", h.snapshot)
	return mux
}

type handler struct {
	src    Source
	logger *slog.Logger
	hub    *hub
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFileFS(w, r, static, "static/index.html")
}

func (h *handler) snapshot(w http.ResponseWriter, _ *http.Request) {
	body, err := encodeSnapshot(h.src.Snapshot())
	if err != nil {
		h.logger.Error("encode snapshot", "err", err)
		http.Error(w, "encode snapshot", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(body)
}

func (h *handler) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	sub := h.hub.subscribe()
	defer h.hub.unsubscribe(sub)

	send := func(body []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write([]byte("event: snapshot\ndata: ")); err != nil {
			return false
		}
		if _, err := w.Write(body); err != nil {
			return false
		}
		if _, err := w.Write([]byte("\n\n")); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The first snapshot at once, so the page paints without waiting.
	first, err := encodeSnapshot(h.src.Snapshot())
	if err != nil {
		h.logger.Error("encode snapshot", "err", err)
		return
	}
	if _, err := w.Write([]byte("retry: 2000\n")); err != nil {
		return
	}
	if !send(first) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case body := <-sub.ch:
			if !send(body) {
				h.logger.Debug("live page client gone", "remote", r.RemoteAddr)
				return
			}
		}
	}
}

// encodeSnapshot marshals s, with NaN and ±Inf (which JSON cannot carry)
// written as 0 and series values rounded to 0.1 kW (shorter events; the
// page draws MW). The source's slices are never written.
func encodeSnapshot(s Snapshot) ([]byte, error) {
	s.Sites = finiteDomains(s.Sites)
	s.Halls = finiteDomains(s.Halls)
	if len(s.SiteSeries) > 0 {
		series := make(map[string][]Point, len(s.SiteSeries))
		for k, pts := range s.SiteSeries {
			out := make([]Point, len(pts))
			for i, p := range pts {
				out[i] = Point{T: p.T, MW: math.Round(fin(p.MW)*1e4) / 1e4}
			}
			series[k] = out
		}
		s.SiteSeries = series
	}
	if len(s.Alerts) > 0 {
		alerts := append([]AlertView(nil), s.Alerts...)
		for i := range alerts {
			alerts[i].Value = fin(alerts[i].Value)
			alerts[i].Threshold = fin(alerts[i].Threshold)
		}
		s.Alerts = alerts
	}
	return json.Marshal(s)
}

func finiteDomains(ds []DomainView) []DomainView {
	if len(ds) == 0 {
		return ds
	}
	out := append([]DomainView(nil), ds...)
	for i := range out {
		d := &out[i]
		for _, f := range []*float64{&d.PowerMW, &d.PowerEstMW, &d.PowerMaxMW, &d.CapacityMW, &d.HeadroomMW,
			&d.Coverage, &d.RampMWPerS, &d.SwingMW, &d.OscFreqHz, &d.OscMW, &d.GPUTempMaxC, &d.GPUW, &d.NodeW, &d.FacilityW} {
			*f = fin(*f)
		}
		// No figure (nil) rather than a made-up 0 W.
		for _, f := range []**float64{&d.MeteredW, &d.UnaccountedW} {
			if *f != nil && !finite(**f) {
				*f = nil
			}
		}
	}
	return out
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

func fin(f float64) float64 {
	if finite(f) {
		return f
	}
	return 0
}
