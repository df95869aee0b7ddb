package alerts

import (
	"time"

	"github.com/megawatch/megawatch/alerts/rules"
)

func f64(v float64) *float64 { return &v }

// DefaultRules are the rules a campus starts with (configs/alerts.yaml).
func DefaultRules() []rules.Rule {
	powerNote := map[string]string{
		"summary": "{{ .Level }} {{ .Domain }} draws {{ mw .Value }}, {{ pct (div .Value .CapacityMW) }} of its {{ mw .CapacityMW }} capacity (threshold {{ mw .Threshold }})",
		"description": "Facility power over the last window — what the breaker carries: metered where fresh meters cover the domain, else the node sum (GPUs, hosts, " +
			"silent nodes at their last known power) — is above the threshold; it resolves below {{ mw .Clear }} once the figure is measured again " +
			"(meters fresh, or at least resolve_min_coverage of the nodes reporting). Shed or cap load (power limits, job scheduler) before the breaker or the utility contract limit is reached.",
	}
	degradedNote := func(level string) map[string]string {
		return map[string]string{
			"summary":     level + " {{ .Domain }}: telemetry degraded, {{ pct .Coverage }} of nodes report; its power figures are partly estimated and its alerts will not resolve until coverage is back",
			"description": "Too few reports reach the aggregator for this domain's figures to be measured. Power is estimated with silent nodes at their last known power. Check the collectors, the network, NATS and the aggregator's lag (megawatch_alerts_lag_seconds).",
		}
	}
	return []rules.Rule{
		{Name: "hall_power_high", Level: "hall", Metric: rules.MetricPowerMW, Power: rules.PowerFacility, OfCapacity: f64(0.90), ClearOfCapacity: f64(0.88),
			For: time.Minute, Severity: "warning", Labels: map[string]string{"team": "facility"}, Annotations: powerNote},
		{Name: "hall_power_critical", Level: "hall", Metric: rules.MetricPowerMW, Power: rules.PowerFacility, OfCapacity: f64(0.95), ClearOfCapacity: f64(0.92),
			For: 30 * time.Second, Severity: "critical", Labels: map[string]string{"team": "facility"}, Annotations: powerNote},
		{Name: "site_power_high", Level: "site", Metric: rules.MetricPowerMW, Power: rules.PowerFacility, OfCapacity: f64(0.90), ClearOfCapacity: f64(0.88),
			For: time.Minute, Severity: "warning", Labels: map[string]string{"team": "facility"}, Annotations: powerNote},
		{Name: "site_power_critical", Level: "site", Metric: rules.MetricPowerMW, Power: rules.PowerFacility, OfCapacity: f64(0.95), ClearOfCapacity: f64(0.92),
			For: 30 * time.Second, Severity: "critical", Labels: map[string]string{"team": "facility"}, Annotations: powerNote},
		{Name: "site_ramp", Level: "site", Metric: rules.MetricRampMWPerS, Power: rules.PowerGPU, Threshold: f64(20), Clear: f64(10),
			KeepFiringFor: time.Minute, Severity: "critical", Labels: map[string]string{"team": "facility"},
			Annotations: map[string]string{
				"summary":     "site {{ .Domain }} power changed by {{ mw .Value }} within 1 s (ramp {{ f .Value }} MW/s, threshold {{ f .Threshold }} MW/s)",
				"description": "A step this fast stresses the utility interconnect and on-site generation. Check for a job start/stop or a failure across many nodes.",
			}},
		{Name: "site_oscillation", Level: "site", Metric: rules.MetricOscillationMW, Power: rules.PowerGPU, Band: []float64{0.2, 3}, Threshold: f64(10), Clear: f64(6),
			For: 30 * time.Second, Severity: "critical", Labels: map[string]string{"team": "facility"},
			Annotations: map[string]string{
				"summary":     "site {{ .Domain }} oscillates {{ mw .Value }} peak-to-peak at {{ hz .FreqHz }} (threshold {{ mw .Threshold }})",
				"description": "A synchronised training job swings site power in the 0.2-3 Hz band, where it can excite grid and generator resonances. Ask the job owner to smooth power (power floor, staggered communication).",
			}},
		{Name: "hall_oscillation", Level: "hall", Metric: rules.MetricOscillationMW, Power: rules.PowerGPU, Band: []float64{0.2, 3}, Threshold: f64(4), Clear: f64(2.5),
			For: 30 * time.Second, Severity: "warning", Labels: map[string]string{"team": "facility"},
			Annotations: map[string]string{
				"summary": "hall {{ .Domain }} oscillates {{ mw .Value }} peak-to-peak at {{ hz .FreqHz }} (threshold {{ mw .Threshold }})",
			}},
		{Name: "hall_coverage_low", Level: "hall", Metric: rules.MetricCoverage, Threshold: f64(0.98), Clear: f64(0.99),
			For: 30 * time.Second, Severity: "warning", Labels: map[string]string{"team": "telemetry"},
			Annotations: map[string]string{
				"summary":     "hall {{ .Domain }}: {{ pct .Value }} of nodes report (threshold {{ pct .Threshold }}); power figures are partly estimated while it is low",
				"description": "Measured power misses the silent nodes; power_est_mw fills them with their last known power. Check the collectors, the network and NATS.",
			}},
		{Name: "hall_telemetry_degraded", Level: "hall", Metric: rules.MetricDegraded, Threshold: f64(0.5),
			For: 5 * time.Second, Severity: "warning", Labels: map[string]string{"team": "telemetry"}, Annotations: degradedNote("hall")},
		{Name: "site_telemetry_degraded", Level: "site", Metric: rules.MetricDegraded, Threshold: f64(0.5),
			For: 5 * time.Second, Severity: "warning", Labels: map[string]string{"team": "telemetry"}, Annotations: degradedNote("site")},
		{Name: "row_thermal_throttling", Level: "row", Metric: rules.MetricThrottledGPUs, Threshold: f64(7), Clear: f64(0),
			For: time.Minute, Severity: "warning", Labels: map[string]string{"team": "facility"},
			Annotations: map[string]string{
				"summary":     "row {{ .Domain }}: {{ .Value }} GPUs thermally throttled (threshold {{ .Threshold }})",
				"description": "GPUs report HW/SW thermal slowdown or power brake: check cooling (CDU flow, inlet temperature) for this row.",
			}},
		{Name: "row_meter_divergence", Level: "row", Metric: rules.MetricUnaccountedRatio, Threshold: f64(0.2), Clear: f64(0.15),
			For: 2 * time.Minute, Severity: "warning", Labels: map[string]string{"team": "telemetry"}, Annotations: divergenceNote("row")},
		{Name: "hall_meter_divergence", Level: "hall", Metric: rules.MetricUnaccountedRatio, Threshold: f64(0.3), Clear: f64(0.25),
			For: 5 * time.Minute, Severity: "warning", Labels: map[string]string{"team": "telemetry"}, Annotations: divergenceNote("hall")},
		{Name: "hall_meters_stale", Level: "hall", Metric: rules.MetricStaleMeters, Threshold: f64(0),
			For: time.Minute, Severity: "warning", Labels: map[string]string{"team": "telemetry"},
			Annotations: map[string]string{
				"summary": "hall {{ .Domain }}: {{ .Value }} meters stale; where they measure, facility power is the node sum, not the meter",
				"description": "A meter sends no fresh reading (megawatch meters reports it stale, or nothing arrives). Facility alerts on the domains it covers are held until it is back. " +
					"Check megawatch_meters_* metrics of the meters process, the meter's network path and the meter itself (SNMP agent, Modbus gateway).",
			}},
	}
}

// divergenceNote is the annotation of a meter/node divergence rule.
func divergenceNote(level string) map[string]string {
	return map[string]string{
		"summary": level + " {{ .Domain }}: {{ pct .Value }} of the metered power is not in the reporting nodes' power (threshold {{ pct .Threshold }})",
		"description": "Unaccounted power (metered − node sum of the reporting nodes) is beyond the normal losses and non-IT load on this feed. " +
			"Either collectors stopped reporting while their nodes still draw power (see coverage and stale_nodes), or a load on this feed is not in the topology. " +
			"Find the silent nodes or the unmonitored load; see docs/alerts.md, \"Meter divergence\".",
	}
}
