package topology

import "slices"

// SNMPPreset is the power and energy objects of one PDU MIB table.
type SNMPPreset struct {
	MIB, Object string
	PowerOID    string // with %s for the index
	PowerScale  float64
	EnergyOID   string // "" when the MIB has none at this level
	EnergyScale float64
	Index       []string // what each index component is
	Doc         string
}

// SNMPPresets are the supported presets; docs/meters.md lists them.
var snmpPresets = map[string]SNMPPreset{
	// Raritan PDU2-MIB, measurementsInletSensorValue
	// (pdu2.measurements.measurementsInlet.inletSensorMeasurementsTable, .1.3.6.1.4.1.13742.6.5.2.3.1.4)
	// indexed by pduId.inletId.sensorType; sensor type activePower(5) in W,
	// activeEnergy(8) in Wh (inletSensorDecimalDigits 0 for both).
	"raritan-pdu2-inlet": {MIB: "PDU2-MIB", Object: "measurementsInletSensorValue",
		PowerOID: ".1.3.6.1.4.1.13742.6.5.2.3.1.4.%s.5", PowerScale: 1,
		EnergyOID: ".1.3.6.1.4.1.13742.6.5.2.3.1.4.%s.8", EnergyScale: 1,
		Index: []string{"pduId", "inletId"}, Doc: "inlet active power (W) and active energy (Wh)"},
	// APC PowerNet-MIB rPDU2DeviceStatusPower (.1.3.6.1.4.1.318.1.1.26.4.3.1.5,
	// hundredths of kW) and rPDU2DeviceStatusEnergy (.1.3.6.1.4.1.318.1.1.26.4.3.1.9,
	// tenths of kWh), indexed by rPDU2DeviceStatusIndex.
	"apc-rpdu2-device": {MIB: "PowerNet-MIB", Object: "rPDU2DeviceStatusPower",
		PowerOID: ".1.3.6.1.4.1.318.1.1.26.4.3.1.5.%s", PowerScale: 10,
		EnergyOID: ".1.3.6.1.4.1.318.1.1.26.4.3.1.9.%s", EnergyScale: 100,
		Index: []string{"rPDU2DeviceStatusIndex"}, Doc: "whole-PDU power (0.01 kW) and energy (0.1 kWh)"},
	// APC PowerNet-MIB rPDU2PhaseStatusPower (.1.3.6.1.4.1.318.1.1.26.6.3.1.7,
	// hundredths of kW), indexed by rPDU2PhaseStatusIndex; no energy per phase.
	"apc-rpdu2-phase": {MIB: "PowerNet-MIB", Object: "rPDU2PhaseStatusPower",
		PowerOID: ".1.3.6.1.4.1.318.1.1.26.6.3.1.7.%s", PowerScale: 10,
		Index: []string{"rPDU2PhaseStatusIndex"}, Doc: "one phase's power (0.01 kW)"},
	// ServerTech Sentry4-MIB st4InputCordActivePower (.1.3.6.1.4.1.1718.4.1.3.3.1.3, W)
	// and st4InputCordEnergy (.1.3.6.1.4.1.1718.4.1.3.3.1.10, tenths of kWh),
	// indexed by st4UnitIndex.st4InputCordIndex.
	"servertech-sentry4-cord": {MIB: "Sentry4-MIB", Object: "st4InputCordActivePower",
		PowerOID: ".1.3.6.1.4.1.1718.4.1.3.3.1.3.%s", PowerScale: 1,
		EnergyOID: ".1.3.6.1.4.1.1718.4.1.3.3.1.10.%s", EnergyScale: 100,
		Index: []string{"st4UnitIndex", "st4InputCordIndex"}, Doc: "input cord active power (W) and energy (0.1 kWh)"},
}

// SNMPPresets returns the preset table (a copy).
func SNMPPresets() map[string]SNMPPreset {
	out := make(map[string]SNMPPreset, len(snmpPresets))
	for k, v := range snmpPresets {
		out[k] = v
	}
	return out
}

func sortedPresetNames() []string {
	out := make([]string, 0, len(snmpPresets))
	for k := range snmpPresets {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
