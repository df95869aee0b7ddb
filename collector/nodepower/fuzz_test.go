package nodepower

import (
	"math"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/nodepower/bmctest"
)

// mockupSeeds adds every mockup resource as a seed.
func mockupSeeds(f *testing.F) {
	f.Helper()
	for _, b := range bmctest.Mockup() {
		f.Add(b)
	}
	for _, s := range []string{``, `null`, `{}`, `[]`, `{"Reading": null}`, `{"Reading": -1}`, `{"Reading": 1e400}`,
		`{"PowerWatts": {"Reading": 1e7}}`, `{"PowerControl": [{"PowerConsumedWatts": null}, {"PowerConsumedWatts": 12.5}]}`,
		`{"Members": [{"@odata.id": 5}]}`, `{"Reading": 3, "ReadingUnits": "kW"}`, `{"EnergykWh": {"Reading": 1e300}, "PowerWatts": {"Reading": 1}}`} {
		f.Add([]byte(s))
	}
}

func plausible(t *testing.T, what string, s Sample) {
	t.Helper()
	if math.IsNaN(s.PowerW) || s.PowerW < 0 || s.PowerW > maxNodeW {
		t.Fatalf("%s: implausible power %v accepted", what, s.PowerW)
	}
}

// FuzzRedfishBodies feeds every Redfish decoder the same body: none may
// panic, and what they accept is a plausible figure.
func FuzzRedfishBodies(f *testing.F) {
	mockupSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = DecodeCollection(b)
		_, _ = DecodeChassis(b)
		if s, err := DecodeEnvironmentMetrics(b); err == nil {
			plausible(t, "EnvironmentMetrics", s)
		}
		if s, err := DecodePower(b); err == nil {
			plausible(t, "Power", s)
		}
		if sr, err := DecodeSensor(b); err == nil {
			if w, err := sr.PowerW(); err == nil {
				plausible(t, "Sensor", Sample{PowerW: w})
			}
			_, _ = sr.EnergyMJ()
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "7", "0", "-1", "99999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"} {
		f.Add(s)
	}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, v string) {
		if d := ParseRetryAfter(v, now); d < 0 || d > maxRetryAfter {
			t.Fatalf("ParseRetryAfter(%q) = %s", v, d)
		}
	})
}

// FuzzSysfsAttributes covers the hwmon and RAPL file decoders.
func FuzzSysfsAttributes(f *testing.F) {
	for _, s := range []string{"6512345000\n", "0\n", "", "\n", "-1\n", "18446744073709551615\n", "18446744073709551616\n", "1e9\n", " 42 ", "0x10\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if uw, err := ParseHwmonMicrowatts(b); err == nil && uw > maxNodeW*1e6 {
			t.Fatalf("hwmon %d µW accepted", uw)
		}
		_, _ = ParseRAPLCounter(b)
	})
}
