// Package web serves the live page of megawatch alerts: site and hall power
// against capacity, headroom, coverage, the last minute of 10 Hz site power,
// ramp, oscillation and the active alerts, pushed to the browser with
// server-sent events. It is the operators' fallback view when Grafana or
// InfluxDB is down, so it needs nothing but the alerts process: every asset
// is embedded and the page works with no internet.
package web

import (
	"time"
)

// DomainView is one domain (site or hall) of the power hierarchy as the
// page shows it. Power in MW; Coverage is nodes reporting / expected (0..1).
type DomainView struct {
	Level          string   `json:"level"`
	Path           []string `json:"path"`
	Key            string   `json:"key"`
	PowerMW        float64  `json:"power_mw"`
	PowerEstMW     float64  `json:"power_est_mw"`
	PowerMaxMW     float64  `json:"power_max_mw"`
	CapacityMW     float64  `json:"capacity_mw"`
	HeadroomMW     float64  `json:"headroom_mw"` // capacity − facility power (what headroom_mw rules evaluate)
	NodesReporting int      `json:"nodes_reporting"`
	NodesExpected  int      `json:"nodes_expected"`
	Coverage       float64  `json:"coverage"`
	RampMWPerS     float64  `json:"ramp_mw_per_s"`
	SwingMW        float64  `json:"swing_mw"`
	OscFreqHz      float64  `json:"osc_freq_hz"`
	OscMW          float64  `json:"osc_mw"`
	GPUTempMaxC    float64  `json:"gpu_temp_max_c"`
	ThrottledGPUs  int      `json:"throttled_gpus"`
	// Degraded: too few nodes report (coverage below resolve_min_coverage):
	// PowerEstMW is partly an estimate and the page marks it so. OscFound is false when there is
	// no oscillation peak in band (OscFreqHz is then meaningless).
	Degraded bool `json:"degraded"`
	OscFound bool `json:"osc_found"`
	// LagS is how late the aggregator computed this window (it fell behind).
	LagS float64 `json:"lag_s"`
	// Facility power (alerts/snapshot.go fills them), W: GPUW is GPU power
	// (silent nodes at their last known power), NodeW node power (GPUs +
	// hosts, measured or modeled; silent nodes at their last node power),
	// MeteredW the meters' figure (absent when fresh meters do not cover
	// the domain), FacilityW what the breaker carries (metered, else
	// NodeW) and FacilitySource which ("meter" or "node"); UnaccountedW is
	// metered − node power of the reporting nodes (absent without
	// MeteredW); MetersStale the domain's meters without a fresh reading;
	// FacilityDegraded: the facility figure is partly estimated (meters
	// stale, or node sum at low coverage).
	GPUW             float64  `json:"gpu_w"`
	NodeW            float64  `json:"node_w"`
	MeteredW         *float64 `json:"metered_w,omitempty"`
	FacilityW        float64  `json:"facility_w"`
	FacilitySource   string   `json:"facility_source"`
	UnaccountedW     *float64 `json:"unaccounted_w,omitempty"`
	MetersStale      int      `json:"meters_stale"`
	FacilityDegraded bool     `json:"facility_degraded"`
}

// HasFacility reports whether the aggregator sent facility power (an
// older one sends no facility_source: the page and the demo then show GPU
// power as before).
func (d DomainView) HasFacility() bool { return d.FacilitySource != "" }

// PowerShownMW is the figure the page and the demo put against capacity:
// facility power when the aggregator sends it (the capacity rules evaluate
// it), else the GPU estimate.
func (d DomainView) PowerShownMW() float64 {
	if d.HasFacility() {
		return d.FacilityW / 1e6
	}
	return d.PowerEstMW
}

// ShownDegraded reports whether PowerShownMW is partly estimated: the
// facility figure's own flag (a fresh meter is measured whatever the
// nodes' coverage), else the GPU figure's.
func (d DomainView) ShownDegraded() bool {
	if d.HasFacility() {
		return d.FacilityDegraded
	}
	return d.Degraded
}

// Point is one slot of a power series: T in unix milliseconds, MW.
type Point struct {
	T  int64   `json:"t"`
	MW float64 `json:"mw"`
}

// AlertView is one active (pending or firing) alert.
type AlertView struct {
	Rule        string    `json:"rule"`
	Severity    string    `json:"severity"`
	Level       string    `json:"level"`
	Domain      string    `json:"domain"`
	State       string    `json:"state"`
	Value       float64   `json:"value"`
	Threshold   float64   `json:"threshold"`
	Summary     string    `json:"summary"`
	ActiveSince time.Time `json:"active_since"`
	// Coverage of the domain; Held when the value is on the clear side but
	// the alert stays firing because the domain's telemetry is degraded.
	Coverage float64 `json:"coverage"`
	Degraded bool    `json:"degraded"`
	Held     bool    `json:"held"`
}

// Snapshot is everything the page shows at one instant.
type Snapshot struct {
	At         time.Time          `json:"at"`
	WindowMs   int                `json:"window_ms"`
	Sites      []DomainView       `json:"sites"`
	Halls      []DomainView       `json:"halls"`
	SiteSeries map[string][]Point `json:"site_series"` // site key → last 60 s at slot resolution
	Alerts     []AlertView        `json:"alerts"`
}

// Source gives the current snapshot. It is called from one goroutine per
// Handler at the SSE interval (and once per page load or /api/snapshot
// request); it must be safe for concurrent use and must not block for long.
type Source interface {
	Snapshot() Snapshot
}
