package sim

import (
	"path"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// Facility faults are about what reaches the pipeline, not about what the
// nodes draw: a node whose collector is down (collector_down) still draws
// its power, so a meter over it keeps reading it while its reports are
// missing; a silent meter (meter_silent) does not answer, so it is
// reported stale, never as 0 W. The model (Report, the NVML driver)
// ignores both; publishers ask CollectorDown, simulated meters MeterSilent.

// validateFacilityFault checks the keys of a collector_down or meter_silent
// fault (kind, from and until are checked by Validate).
func validateFacilityFault(f Fault, key string, bad func(key, format string, a ...any)) {
	if f.GPU != -1 {
		bad(key+"gpu", "not for %s (it is about the whole node or meter)", f.Kind)
	}
	switch f.Kind {
	case FaultMeterSilent:
		if f.Meter == "" {
			bad(key+"meter", "required for meter_silent: a glob on the meter name, e.g. pdu-h1-r03-*")
		} else if _, err := path.Match(f.Meter, ""); err != nil {
			bad(key+"meter", "pattern %q: %v", f.Meter, err)
		}
		if f.Node != "" {
			bad(key+"node", "not for meter_silent (name the meter with meter:)")
		}
	case FaultCollectorDown:
		if f.Node == "" {
			bad(key+"node", "required for collector_down (e.g. \"hall=h1,row=r03\"; \"*\" for every node)")
		}
	}
}

// activeAt reports whether the fault is in force at wall-clock time t.
func (f *Fault) activeAt(epochNs int64, t time.Time) bool {
	s := t.UnixNano() - epochNs
	return s >= int64(f.From) && (f.Until == 0 || s < int64(f.Until))
}

func (c Config) epochNs() int64 {
	if c.Epoch.IsZero() {
		return 0
	}
	return c.Epoch.UnixNano()
}

// CollectorDown reports whether the collector of the node at loc publishes
// nothing for the window ending at windowEnd (a collector_down fault covers
// the window's last instant). The node still draws power.
func (c Config) CollectorDown(loc telemetry.Location, windowEnd time.Time) bool {
	last := windowEnd.Add(-time.Nanosecond)
	for i := range c.Faults {
		f := &c.Faults[i]
		if f.Kind == FaultCollectorDown && f.activeAt(c.epochNs(), last) && matchSelector(f.Node, loc) {
			return true
		}
	}
	return false
}

// MeterSilent reports whether the simulated meter named meter does not
// answer for the window ending at windowEnd (a meter_silent fault matching
// its name covers the window's last instant).
func (c Config) MeterSilent(meter string, windowEnd time.Time) bool {
	last := windowEnd.Add(-time.Nanosecond)
	for i := range c.Faults {
		f := &c.Faults[i]
		if f.Kind != FaultMeterSilent || !f.activeAt(c.epochNs(), last) {
			continue
		}
		if ok, _ := path.Match(f.Meter, meter); ok {
			return true
		}
	}
	return false
}

// CollectorDown is Config.CollectorDown for node i of the fleet: a fleet
// publisher (loadgen, demo) skips the node's report for that window.
func (f *Fleet) CollectorDown(i int, windowEnd time.Time) bool {
	return f.p.cfg.CollectorDown(f.nodes[i].n.loc, windowEnd)
}

// Location is node i's location.
func (f *Fleet) Location(i int) telemetry.Location { return f.nodes[i].n.loc }

// nodePowerOf is what the node at loc reports as node power: redfish,
// hwmon, model or none (node_power, or with mixed the first matching
// node_power_mix entry, else redfish).
func (c Config) nodePowerOf(loc telemetry.Location) string {
	switch c.NodePower {
	case "":
		return NodePowerRedfish
	case NodePowerMixed:
		for _, m := range c.NodePowerMix {
			if matchSelector(m.Nodes, loc) {
				return m.Source
			}
		}
		return NodePowerRedfish
	}
	return c.NodePower
}

// NodePowerSource is what node i of the fleet reports as node power:
// redfish, hwmon, model or none (Config.NodePower and NodePowerMix).
func (f *Fleet) NodePowerSource(i int) string { return f.nodes[i].n.nodePower }
