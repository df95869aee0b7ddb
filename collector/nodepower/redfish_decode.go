package nodepower

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
)

// The Redfish resources the BMC source reads, reduced to the properties it
// uses. Every decoder takes a body from the BMC: outside input.

type odataLink struct {
	ID string `json:"@odata.id"`
}

type collectionBody struct {
	Members []odataLink `json:"Members"`
}

// DecodeCollection returns the member URIs of a Redfish collection.
func DecodeCollection(b []byte) ([]string, error) {
	var c collectionBody
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("collection: %w", err)
	}
	out := make([]string, 0, len(c.Members))
	for _, m := range c.Members {
		if m.ID != "" {
			out = append(out, m.ID)
		}
	}
	return out, nil
}

// ChassisLinks are the power-related resources a chassis links to, and
// whether it sits inside another chassis (Links.ContainedBy).
type ChassisLinks struct {
	EnvironmentMetrics, Sensors, PowerSubsystem, Power string
	ChassisType                                        string
	Contained                                          bool
}

// hasPower reports whether the chassis links to a resource with its power.
func (l ChassisLinks) hasPower() bool {
	return l.EnvironmentMetrics != "" || l.Sensors != "" || l.Power != ""
}

// DecodeChassis returns a chassis' power-related links ("" when absent).
func DecodeChassis(b []byte) (ChassisLinks, error) {
	var c struct {
		EnvironmentMetrics *odataLink `json:"EnvironmentMetrics"`
		Sensors            *odataLink `json:"Sensors"`
		PowerSubsystem     *odataLink `json:"PowerSubsystem"`
		Power              *odataLink `json:"Power"`
		ChassisType        string     `json:"ChassisType"`
		Links              *struct {
			ContainedBy *odataLink `json:"ContainedBy"`
		} `json:"Links"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return ChassisLinks{}, fmt.Errorf("chassis: %w", err)
	}
	id := func(l *odataLink) string {
		if l == nil {
			return ""
		}
		return l.ID
	}
	return ChassisLinks{EnvironmentMetrics: id(c.EnvironmentMetrics), Sensors: id(c.Sensors),
		PowerSubsystem: id(c.PowerSubsystem), Power: id(c.Power), ChassisType: c.ChassisType,
		Contained: c.Links != nil && c.Links.ContainedBy != nil && c.Links.ContainedBy.ID != ""}, nil
}

type status struct {
	State string `json:"State"`
}

// usable: a resource whose Status.State is absent or Enabled has readings.
func (s *status) usable() bool {
	return s == nil || s.State == "" || s.State == "Enabled" || s.State == "Quiesced" || s.State == "StandbyOffline"
}

// errNoReading: the resource is there but carries no reading.
var errNoReading = errors.New("no reading")

// DecodeEnvironmentMetrics returns PowerWatts.Reading (W) and the energy
// counter (EnergyJoules or EnergykWh, in mJ) when present.
func DecodeEnvironmentMetrics(b []byte) (Sample, error) {
	var e struct {
		PowerWatts *struct {
			Reading *float64 `json:"Reading"`
		} `json:"PowerWatts"`
		EnergyJoules *struct {
			Reading *float64 `json:"Reading"`
		} `json:"EnergyJoules"`
		EnergykWh *struct {
			Reading *float64 `json:"Reading"`
		} `json:"EnergykWh"`
		Status *status `json:"Status"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return Sample{}, fmt.Errorf("EnvironmentMetrics: %w", err)
	}
	if !e.Status.usable() || e.PowerWatts == nil || e.PowerWatts.Reading == nil {
		return Sample{}, fmt.Errorf("EnvironmentMetrics.PowerWatts: %w", errNoReading)
	}
	w, err := checkWatts(*e.PowerWatts.Reading)
	if err != nil {
		return Sample{}, fmt.Errorf("EnvironmentMetrics.PowerWatts: %w", err)
	}
	s := Sample{PowerW: w}
	switch {
	case e.EnergyJoules != nil && e.EnergyJoules.Reading != nil:
		s.EnergyMJ, s.HasEnergy = energyMJ(*e.EnergyJoules.Reading, 1e3)
	case e.EnergykWh != nil && e.EnergykWh.Reading != nil:
		s.EnergyMJ, s.HasEnergy = energyMJ(*e.EnergykWh.Reading, 3.6e9)
	}
	return s, nil
}

// SensorReading is one Sensor resource's reading in its units.
type SensorReading struct {
	Value       float64
	Units, Type string // ReadingUnits, ReadingType
}

// DecodeSensor returns a Sensor's Reading; a sensor that is not enabled or
// has a null reading is errNoReading.
func DecodeSensor(b []byte) (SensorReading, error) {
	var s struct {
		Reading      *float64 `json:"Reading"`
		ReadingUnits string   `json:"ReadingUnits"`
		ReadingType  string   `json:"ReadingType"`
		Status       *status  `json:"Status"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return SensorReading{}, fmt.Errorf("sensor: %w", err)
	}
	if !s.Status.usable() || s.Reading == nil {
		return SensorReading{}, fmt.Errorf("sensor: %w", errNoReading)
	}
	if math.IsNaN(*s.Reading) || math.IsInf(*s.Reading, 0) {
		return SensorReading{}, errors.New("sensor: reading is not a number")
	}
	return SensorReading{Value: *s.Reading, Units: s.ReadingUnits, Type: s.ReadingType}, nil
}

// PowerW converts a power sensor reading to watts.
func (r SensorReading) PowerW() (float64, error) {
	switch r.Units {
	case "W", "":
		return checkWatts(r.Value)
	case "kW":
		return checkWatts(r.Value * 1000)
	}
	return 0, fmt.Errorf("power sensor in unsupported units %q", truncate(r.Units, 16))
}

// EnergyMJ converts an energy sensor reading to millijoules.
func (r SensorReading) EnergyMJ() (uint64, bool) {
	switch {
	case r.Units == "J" || r.Type == "EnergyJoules":
		return energyMJ(r.Value, 1e3)
	case r.Units == "kW.h" || r.Units == "kWh" || r.Type == "EnergykWh":
		return energyMJ(r.Value, 3.6e9)
	case r.Units == "W.h" || r.Type == "EnergyWh":
		return energyMJ(r.Value, 3.6e6)
	}
	return 0, false
}

// DecodePower returns the legacy Power resource's chassis consumption: the
// first PowerControl entry with a PowerConsumedWatts (the chassis total;
// later entries are usually parts of it).
func DecodePower(b []byte) (Sample, error) {
	var p struct {
		PowerControl []struct {
			PowerConsumedWatts *float64 `json:"PowerConsumedWatts"`
			Status             *status  `json:"Status"`
		} `json:"PowerControl"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return Sample{}, fmt.Errorf("Power: %w", err)
	}
	for _, pc := range p.PowerControl {
		if pc.PowerConsumedWatts == nil || !pc.Status.usable() {
			continue
		}
		w, err := checkWatts(*pc.PowerConsumedWatts)
		if err != nil {
			return Sample{}, fmt.Errorf("Power.PowerControl.PowerConsumedWatts: %w", err)
		}
		return Sample{PowerW: w}, nil
	}
	return Sample{}, fmt.Errorf("Power.PowerControl[].PowerConsumedWatts: %w", errNoReading)
}

func checkWatts(w float64) (float64, error) {
	if math.IsNaN(w) || w < 0 || w > maxNodeW {
		return 0, fmt.Errorf("implausible power %g W", w)
	}
	return w, nil
}

// energyMJ scales an energy reading to mJ; false when it does not fit.
func energyMJ(v, scale float64) (uint64, bool) {
	mj := v * scale
	if math.IsNaN(mj) || mj < 0 || mj >= 1.8e19 {
		return 0, false
	}
	return uint64(mj), true
}

// memberNamed returns the member URI whose last path segment is name.
func memberNamed(members []string, name string) string {
	for _, m := range members {
		if strings.EqualFold(m[strings.LastIndexByte(m, '/')+1:], name) {
			return m
		}
	}
	return ""
}
