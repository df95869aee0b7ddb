// Package sim is the simulated GPU fleet. It replaces only the NVML driver:
// New builds an nvml.Interface on go-nvml's mock server (dgxh100 or dgxb200)
// whose devices are driven by a deterministic physical model of training
// jobs, heat and faults, and Fleet computes whole NodeReports for thousands
// of nodes from the same model without the NVML layer. See docs/simulator.md.
package sim

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the scenario: the GPU model, thermal parameters, the jobs that
// run and the faults that are injected. Zero numeric values of the
// model-dependent parameters (tdp_w, idle_w, power_limit_w,
// thermal_r_c_per_w) mean "the model's default".
type Config struct {
	Model string    `yaml:"model"` // "dgxh100" (default) or "dgxb200"
	Seed  uint64    `yaml:"seed"`
	Epoch time.Time `yaml:"epoch"` // scenario time 0; zero = the Unix epoch

	TDPW        float64 `yaml:"tdp_w"`         // 0 = model default (H100 700 W, B200 1000 W)
	IdleW       float64 `yaml:"idle_w"`        // 0 = model default (H100 70 W, B200 140 W)
	PowerLimitW float64 `yaml:"power_limit_w"` // enforced limit; 0 = TDP

	InletC        float64       `yaml:"inlet_c"`           // coolant/air inlet temperature
	ThermalRCPerW float64       `yaml:"thermal_r_c_per_w"` // °C per W above inlet; 0 = model default
	ThermalTau    time.Duration `yaml:"thermal_tau"`       // first-order time constant
	MemOffsetC    float64       `yaml:"mem_offset_c"`      // HBM temperature minus GPU temperature
	SlowdownC     float64       `yaml:"slowdown_c"`        // thermal slowdown starts above this

	// Host power (CPUs, memory, NICs, fans, PSU losses: everything but the
	// GPUs): HostIdleW with the GPUs idle, HostMaxW at full GPU load, linear
	// in the GPUs' load between. 0 = the model's default (DGX H100 1900 W /
	// 4600 W, DGX B200 2600 W / 6300 W).
	HostIdleW float64 `yaml:"host_idle_w"`
	HostMaxW  float64 `yaml:"host_max_w"`
	// NodePower is what a simulated node reports as node power: redfish (a
	// simulated BMC reading GPUs + host, source REDFISH), hwmon (the same
	// reading from the in-band ACPI power meter, source HWMON), model (the
	// collector's estimate from the GPUs, source MODEL), none (absent), or
	// mixed: per node from NodePowerMix.
	NodePower string `yaml:"node_power"`
	// NodePowerMix, with node_power: mixed, gives the source per node: the
	// first entry whose selector matches a node wins; a node no entry
	// matches reports redfish. Ignored with any other node_power (so that
	// `meters --sim`, which sets node_power: redfish to read what the nodes
	// draw, reads every node whatever the mix).
	NodePowerMix []NodePowerMix `yaml:"node_power_mix"`

	Noise     float64 `yaml:"noise"`     // fractional power noise (std dev), e.g. 0.01
	Variation float64 `yaml:"variation"` // fractional per-GPU spread of power, inlet and R

	Jobs   []Job   `yaml:"jobs"`
	Faults []Fault `yaml:"faults"`
}

// Job is a synchronised training job: every GPU of every matching node
// follows the same wall-clock phase.
type Job struct {
	Name string `yaml:"name"`
	// Nodes selects nodes: "" or "*" = all; a glob on the node name
	// ("gpu-h1-r0[1-3]-*"); or comma-separated key=glob terms over site,
	// hall, row, rack, node ("hall=h1,rack=r0*"), all of which must match.
	Nodes string        `yaml:"nodes"`
	Start time.Duration `yaml:"start"` // offset from Epoch
	Stop  time.Duration `yaml:"stop"`  // offset from Epoch; 0 = never
	Ramp  time.Duration `yaml:"ramp"`  // linear ramp up after Start and down before Stop

	Period      time.Duration `yaml:"period"`       // compute+comm cycle, 0.5s..10s
	Duty        float64       `yaml:"duty"`         // compute share of the period, (0,1]
	ComputeFrac float64       `yaml:"compute_frac"` // compute power as a fraction of TDP
	CommFrac    float64       `yaml:"comm_frac"`    // communication/sync power as a fraction of TDP

	CheckpointEvery time.Duration `yaml:"checkpoint_every"` // 0 = no checkpoints
	CheckpointFor   time.Duration `yaml:"checkpoint_for"`   // near-idle pause at the end of each interval
}

// Fault kinds.
const (
	FaultLost         = "lost"          // every device call returns ERROR_GPU_IS_LOST
	FaultNotSupported = "not_supported" // the named field returns ERROR_NOT_SUPPORTED
	FaultHang         = "hang"          // calls block for Hang, or until released
	FaultEnergyReset  = "energy_reset"  // the energy counter restarts from 0 at From
	FaultNoise        = "noise"         // extra fractional power noise
	// Facility faults (facility.go): they change what is published, not
	// what the nodes draw.
	FaultCollectorDown = "collector_down" // the matching nodes' collectors publish nothing; the nodes still draw
	FaultMeterSilent   = "meter_silent"   // the simulated meters named by Meter do not answer (stale)
)

// What simulated nodes report as node power (Config.NodePower).
const (
	NodePowerRedfish = "redfish"
	NodePowerHwmon   = "hwmon"
	NodePowerModel   = "model"
	NodePowerNone    = "none"
	NodePowerMixed   = "mixed" // per node, from Config.NodePowerMix
)

// NodePowerMix is the node-power source of the nodes Nodes selects (same
// syntax as Job.Nodes): redfish, hwmon, model or none.
type NodePowerMix struct {
	Nodes  string `yaml:"nodes"`
	Source string `yaml:"source"`
}

// Fields that not_supported and hang faults name.
const (
	FieldPowerInstant = "power_instant" // FI_DEV_POWER_INSTANT
	FieldPower        = "power"         // GetPowerUsage
	FieldEnergy       = "energy"        // GetTotalEnergyConsumption
	FieldTemp         = "temp"          // GetTemperature(TEMPERATURE_GPU)
	FieldMemTemp      = "mem_temp"      // FI_DEV_MEMORY_TEMP
	FieldPowerLimit   = "power_limit"   // GetEnforcedPowerLimit
	FieldSMClock      = "sm_clock"      // GetClockInfo(CLOCK_SM)
	FieldUtil         = "util"          // GetUtilizationRates
	FieldThrottle     = "throttle"      // GetCurrentClocksEventReasons
)

// Fault is one injected fault. GPU -1 (the default when the key is absent)
// means every GPU of the matching nodes.
type Fault struct {
	Node  string        `yaml:"node"` // same syntax as Job.Nodes
	Kind  string        `yaml:"kind"` // lost | not_supported | hang | energy_reset | noise
	GPU   int           `yaml:"gpu"`  // -1 = all
	Field string        `yaml:"field"`
	From  time.Duration `yaml:"from"`  // offset from Epoch
	Until time.Duration `yaml:"until"` // offset from Epoch; 0 = for ever
	Hang  time.Duration `yaml:"hang"`  // how long a hung call blocks; 0 = until released
	Noise float64       `yaml:"noise"` // for kind noise: extra fractional noise
	Meter string        `yaml:"meter"` // for kind meter_silent: a glob on the meter name
}

// UnmarshalYAML defaults GPU to -1 (all) and keeps unknown keys errors,
// which yaml.v3 would otherwise forget inside a custom unmarshaler.
func (f *Fault) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: fault must be a mapping", n.Line)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		switch k.Value {
		case "node", "kind", "gpu", "field", "from", "until", "hang", "noise", "meter":
		default:
			return fmt.Errorf("line %d: field %s not found in type sim.Fault", k.Line, k.Value)
		}
	}
	type plain Fault
	p := plain{GPU: -1}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*f = Fault(p)
	return nil
}

// DefaultConfig is a DGX H100 node running one synchronised job on every
// node since the epoch: 2 s period, 70 % compute at 0.95 TDP, comm at
// 0.35 TDP, a 20 s checkpoint every 10 minutes, 1 % noise.
func DefaultConfig() Config {
	return Config{
		Model:      "dgxh100",
		InletC:     30,
		ThermalTau: 30 * time.Second,
		MemOffsetC: 5,
		SlowdownC:  87,
		NodePower:  NodePowerRedfish,
		Noise:      0.01,
		Variation:  0.02,
		Jobs: []Job{{
			Name:            "train",
			Period:          2 * time.Second,
			Duty:            0.7,
			ComputeFrac:     0.95,
			CommFrac:        0.35,
			Ramp:            30 * time.Second,
			CheckpointEvery: 10 * time.Minute,
			CheckpointFor:   20 * time.Second,
		}},
	}
}

// Validate returns every problem at once, each with its YAML key under
// "sim.". It never changes the config.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("sim.%s: %s", key, fmt.Sprintf(format, a...)))
	}
	if !c.Epoch.IsZero() && (c.Epoch.Year() < 1970 || c.Epoch.Year() > 2200) {
		bad("epoch", "must be unset or in the years 1970..2200")
	}
	if _, ok := lookupSpec(c.Model); !ok {
		bad("model", "must be dgxh100 or dgxb200, got %q", c.Model)
	}
	spec, _ := lookupSpec(c.Model)
	tdp := spec.tdpW
	if c.TDPW != 0 {
		tdp = c.TDPW
	}
	if !(c.TDPW >= 0 && c.TDPW <= 5000) {
		bad("tdp_w", "must be 0 (model default) or up to 5000")
	}
	if !(c.IdleW >= 0 && (c.IdleW < tdp || tdp == 0)) {
		bad("idle_w", "must be 0 (model default) or between 0 and the TDP (%g W)", tdp)
	}
	if !(c.PowerLimitW >= 0 && c.PowerLimitW <= 5000) {
		bad("power_limit_w", "must be 0 (TDP) or up to 5000")
	}
	if !(c.InletC >= -20 && c.InletC <= 60) {
		bad("inlet_c", "must be -20..60")
	}
	if !(c.ThermalRCPerW >= 0 && c.ThermalRCPerW <= 1) {
		bad("thermal_r_c_per_w", "must be 0 (model default) or up to 1")
	}
	if c.ThermalTau < time.Second || c.ThermalTau > 10*time.Minute {
		bad("thermal_tau", "must be 1s..10m")
	}
	if !(c.MemOffsetC >= -30 && c.MemOffsetC <= 30) {
		bad("mem_offset_c", "must be -30..30")
	}
	if !(c.SlowdownC > c.InletC && c.SlowdownC <= 120) {
		bad("slowdown_c", "must be above inlet_c and at most 120")
	}
	hostIdle, hostMax := spec.hostIdleW, spec.hostMaxW
	if c.HostIdleW > 0 {
		hostIdle = c.HostIdleW
	}
	if c.HostMaxW > 0 {
		hostMax = c.HostMaxW
	}
	if !(c.HostIdleW >= 0 && c.HostIdleW <= 50_000) {
		bad("host_idle_w", "must be 0 (model default) or up to 50000")
	}
	if !(c.HostMaxW >= 0 && c.HostMaxW <= 50_000) || hostMax < hostIdle {
		bad("host_max_w", "must be 0 (model default) or up to 50000, and at least the host idle power (%g W)", hostIdle)
	}
	switch c.NodePower {
	case "", NodePowerRedfish, NodePowerHwmon, NodePowerModel, NodePowerNone, NodePowerMixed: // "": redfish
	default:
		bad("node_power", "must be redfish, hwmon, model, none or mixed, got %q", c.NodePower)
	}
	for i, m := range c.NodePowerMix {
		key := fmt.Sprintf("node_power_mix[%d].", i)
		if err := checkSelector(m.Nodes); err != nil {
			bad(key+"nodes", "%v", err)
		}
		switch m.Source {
		case NodePowerRedfish, NodePowerHwmon, NodePowerModel, NodePowerNone:
		default:
			bad(key+"source", "must be redfish, hwmon, model or none, got %q", m.Source)
		}
	}
	if c.NodePower == NodePowerMixed && len(c.NodePowerMix) == 0 {
		bad("node_power_mix", "required with node_power: mixed (a list of {nodes, source})")
	}
	if !(c.Noise >= 0 && c.Noise <= 0.5) {
		bad("noise", "must be 0..0.5")
	}
	if !(c.Variation >= 0 && c.Variation <= 0.2) {
		bad("variation", "must be 0..0.2")
	}
	for i, j := range c.Jobs {
		key := fmt.Sprintf("jobs[%d].", i)
		if err := checkSelector(j.Nodes); err != nil {
			bad(key+"nodes", "%v", err)
		}
		if j.Stop != 0 && j.Stop <= j.Start {
			bad(key+"stop", "must be 0 (never) or after start")
		}
		if j.Ramp < 0 || (j.Stop != 0 && j.Stop > j.Start && 2*j.Ramp > j.Stop-j.Start) {
			bad(key+"ramp", "must be >= 0 and at most half of stop-start")
		}
		if j.Period < 500*time.Millisecond || j.Period > 10*time.Second {
			bad(key+"period", "must be 0.5s..10s")
		}
		if !(j.Duty > 0 && j.Duty <= 1) {
			bad(key+"duty", "must be in (0,1]")
		}
		if !(j.ComputeFrac > 0 && j.ComputeFrac <= 1.2) {
			bad(key+"compute_frac", "must be in (0,1.2]")
		}
		if !(j.CommFrac >= 0 && j.CommFrac <= 1.2) {
			bad(key+"comm_frac", "must be in [0,1.2]")
		}
		if j.CheckpointEvery < 0 {
			bad(key+"checkpoint_every", "must be >= 0")
		}
		if j.CheckpointFor < 0 || (j.CheckpointEvery > 0 && j.CheckpointFor >= j.CheckpointEvery) ||
			(j.CheckpointEvery == 0 && j.CheckpointFor != 0) {
			bad(key+"checkpoint_for", "must be >= 0 and shorter than checkpoint_every (and 0 without it)")
		}
	}
	for i, f := range c.Faults {
		key := fmt.Sprintf("faults[%d].", i)
		if err := checkSelector(f.Node); err != nil {
			bad(key+"node", "%v", err)
		}
		switch f.Kind {
		case FaultLost, FaultHang, FaultEnergyReset, FaultNoise, FaultNotSupported:
		case FaultCollectorDown, FaultMeterSilent:
			validateFacilityFault(f, key, bad)
		default:
			bad(key+"kind", "must be lost, not_supported, hang, energy_reset, noise, collector_down or meter_silent, got %q", f.Kind)
		}
		if f.Meter != "" && f.Kind != FaultMeterSilent {
			bad(key+"meter", "only for meter_silent")
		}
		if f.GPU < -1 || f.GPU >= gpusPerNode {
			bad(key+"gpu", "must be -1 (all) or 0..%d", gpusPerNode-1)
		}
		_, known := fieldByName(f.Field)
		switch {
		case f.Kind == FaultNotSupported && f.Field == "":
			bad(key+"field", "required for not_supported: one of %s", strings.Join(fieldNames(), ", "))
		case f.Field != "" && !known:
			bad(key+"field", "unknown field %q: one of %s", f.Field, strings.Join(fieldNames(), ", "))
		case f.Field != "" && f.Kind != FaultNotSupported && f.Kind != FaultHang:
			bad(key+"field", "only for not_supported and hang")
		}
		if f.Until != 0 && f.Until <= f.From {
			bad(key+"until", "must be 0 (for ever) or after from")
		}
		if f.Hang < 0 || (f.Hang != 0 && f.Kind != FaultHang) {
			bad(key+"hang", "must be >= 0 and only for kind hang")
		}
		if f.Kind == FaultNoise && !(f.Noise > 0 && f.Noise <= 1) {
			bad(key+"noise", "must be in (0,1] for kind noise")
		} else if f.Kind != FaultNoise && f.Noise != 0 {
			bad(key+"noise", "only for kind noise")
		}
	}
	return errors.Join(errs...)
}

// checkSelector validates the node selector syntax of Job.Nodes/Fault.Node.
func checkSelector(sel string) error {
	if sel == "" || sel == "*" {
		return nil
	}
	terms := []string{sel}
	if strings.Contains(sel, "=") {
		terms = strings.Split(sel, ",")
	}
	for _, t := range terms {
		pat := t
		if k, v, ok := strings.Cut(t, "="); ok {
			switch k {
			case "site", "hall", "row", "rack", "node":
			default:
				return fmt.Errorf("key %q must be site, hall, row, rack or node", k)
			}
			pat = v
		} else if len(terms) > 1 {
			return fmt.Errorf("term %q: want key=glob", t)
		}
		if _, err := path.Match(pat, ""); err != nil {
			return fmt.Errorf("pattern %q: %w", pat, err)
		}
	}
	return nil
}
