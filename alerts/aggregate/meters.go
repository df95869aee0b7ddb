package aggregate

import "errors"

// NodeModel estimates the node power of a node that sent no node_power_mw:
// HostW + PerGPUW × GPUs + the GPUs' power (internal/powermodel has the
// figures of known node types). The zero value means the default node type.
type NodeModel struct {
	HostW   float64 // CPUs, memory, storage, NICs: does not scale with the GPUs
	PerGPUW float64 // NVSwitch share, fans, VRM and PSU losses per GPU
}

// MeterStats counts meter reports by outcome.
type MeterStats struct {
	Accepted, Stale, Decode, Unknown, Mismatch, Late, Future, Shape uint64
}

// ErrNotImplemented is returned by the stubs of the facility power contract.
var ErrNotImplemented = errors.New("not implemented yet")

// HandleMeter decodes one MeterReport (telemetry.MeterReport) published on
// subject (megawatch.v1.meter.<domain path>.<meter>) and stores it in its
// window. A fresh report wins over a stale one of the same meter and
// window, whatever their order. Meters outside the aggregator's scope are
// ErrUnknownMeter.
func (a *Aggregator) HandleMeter(subject string, data []byte) error {
	return ErrNotImplemented
}

// ErrUnknownMeter is returned for a meter not in the topology or scope.
var ErrUnknownMeter = errors.New("meter not in topology or scope")

// MeterStats returns the meter report counters.
func (a *Aggregator) MeterStats() MeterStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mstats
}

// HasMeters reports whether any meter is in the aggregator's scope (the
// caller need not read MEGAWATCH_METER otherwise).
func (a *Aggregator) HasMeters() bool { return false }
