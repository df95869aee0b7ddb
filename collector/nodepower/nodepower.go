// Package nodepower reads the power of a whole node beside its GPUs: the
// BMC over Redfish, the in-band ACPI power meter (hwmon), RAPL package and
// DRAM energy (the CPU component), and an estimate from a model. A Poller
// runs each configured source in its own goroutine with its own interval,
// timeout and error counter and keeps the latest readings with their
// timestamps; the collector asks it, without waiting, for a window's figure.
// See docs/collector.md ("Node power").
package nodepower

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// Sample is one reading of a source: node power (Redfish, hwmon) or CPU
// power (RAPL) in watts, and an energy counter when the source has one.
type Sample struct {
	PowerW    float64
	EnergyMJ  uint64
	HasEnergy bool
}

// Source is one place node power can be read from. Read is called by one
// goroutine at a time and must respect ctx (the source's timeout).
type Source interface {
	// Name is the metric label and config name: redfish, hwmon, rapl, sim.
	Name() string
	// Kind is what the report says: REDFISH, HWMON; NONE for the CPU
	// component (RAPL), which is never the node figure.
	Kind() telemetry.NodePowerSource
	Read(ctx context.Context) (Sample, error)
}

// ErrNoData means the source answered but has no value yet (a RAPL
// counter's first reading, a sensor that is absent): not a failure.
var ErrNoData = errors.New("no data")

// RetryAfterError is a source asking to be left alone for a while (HTTP 503
// or 429 with Retry-After); the poller waits at least After.
type RetryAfterError struct {
	Status int
	After  time.Duration
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("HTTP %d, retry after %s", e.Status, e.After)
}

// GPUs is what the collector knows of a window's GPUs when it asks for the
// node figure; the model needs it.
type GPUs struct {
	Count   int    // GPUs of the node (installed)
	SumMW   uint64 // sum of the window mean power of the GPUs that have one
	AllOK   bool   // every GPU is healthy and has a mean power
	ModelID string // GPU model name (NVML), for node_type auto
}

// Result is the node-power part of one window's report. A figure that is
// not known is absent (its Has flag false), never 0.
type Result struct {
	PowerMW   uint32
	HasPower  bool
	Source    telemetry.NodePowerSource
	CPUMW     uint32
	HasCPU    bool
	EnergyMJ  uint64
	HasEnergy bool
}

// Apply writes r into rep's node-power fields (all four are set or cleared).
func (r Result) Apply(rep *telemetry.NodeReport) {
	rep.NodePowerMw, rep.CpuPowerMw, rep.NodeEnergyMj = nil, nil, nil
	rep.NodePowerSource = telemetry.NodePowerSource_NODE_POWER_NONE
	if r.HasPower {
		v := r.PowerMW
		rep.NodePowerMw = &v
		rep.NodePowerSource = r.Source
	}
	if r.HasCPU {
		v := r.CPUMW
		rep.CpuPowerMw = &v
	}
	if r.HasEnergy && r.HasPower {
		v := r.EnergyMJ
		rep.NodeEnergyMj = &v
	}
}
