package nodepower

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/collector/nodepower/bmctest"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// bmcConfig is a Redfish config for bmc, verified with its CA.
func bmcConfig(t *testing.T, bmc *bmctest.BMC) RedfishConfig {
	c := DefaultConfig().Redfish
	c.URL = bmc.URL()
	c.CAFile = bmc.CAFile(t)
	c.MaxBackoff = time.Minute
	return c
}

func newRedfish(t *testing.T, cfg RedfishConfig) *Redfish {
	t.Helper()
	r, err := NewRedfish(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

func readRF(t *testing.T, r *Redfish) Sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const mockupEnergyMJ = 325675 * 3_600_000_000 // TotalEnergy 325675 kW.h

func TestRedfishMockupEnvironmentMetrics(t *testing.T) {
	bmc := bmctest.New(t)
	r := newRedfish(t, bmcConfig(t, bmc))
	s := readRF(t, r)
	if s.PowerW != 374 || !s.HasEnergy || s.EnergyMJ != mockupEnergyMJ {
		t.Errorf("sample %+v, want 374 W (EnvironmentMetrics.PowerWatts) and %d mJ (Sensors/TotalEnergy)", s, uint64(mockupEnergyMJ))
	}
	if !strings.HasPrefix(r.Layout(), "EnvironmentMetrics") {
		t.Errorf("layout %q", r.Layout())
	}
	// After discovery a read is the power resource and the energy sensor.
	n := bmc.NGets()
	bmc.Set(bmctest.EnvironmentMetrics, "PowerWatts.Reading", 6480.5)
	if s := readRF(t, r); s.PowerW != 6480.5 {
		t.Errorf("second read %v W", s.PowerW)
	}
	got := bmc.Gets(n)
	want := []string{bmctest.EnvironmentMetrics, bmctest.TotalEnergy}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("a read made %v, want %v", got, want)
	}
	if c := bmc.Conns(); c != 1 {
		t.Errorf("%d connections to the BMC, want 1 (reused)", c)
	}
	if m := bmc.MaxConcurrent(); m != 1 {
		t.Errorf("BMC saw %d concurrent requests, want 1", m)
	}
}

func TestRedfishInlineEnergy(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.Set(bmctest.EnvironmentMetrics, "EnergyJoules", map[string]any{"Reading": 1234.5})
	s := readRF(t, newRedfish(t, bmcConfig(t, bmc)))
	if !s.HasEnergy || s.EnergyMJ != 1_234_500 {
		t.Errorf("energy %+v, want 1234500 mJ from EnvironmentMetrics.EnergyJoules", s)
	}
}

func TestRedfishSensorsWithoutEnvironmentMetrics(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.Remove(bmctest.EnvironmentMetrics)
	bmc.Set(bmctest.TotalPower, "Reading", 375.0)
	r := newRedfish(t, bmcConfig(t, bmc))
	s := readRF(t, r)
	if s.PowerW != 375 || s.EnergyMJ != mockupEnergyMJ {
		t.Errorf("sample %+v, want 375 W from Sensors/TotalPower", s)
	}
	if !strings.HasPrefix(r.Layout(), "Sensors") {
		t.Errorf("layout %q", r.Layout())
	}
}

func TestRedfishLegacyPower(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.Remove(bmctest.EnvironmentMetrics, bmctest.Sensors)
	r := newRedfish(t, bmcConfig(t, bmc))
	s := readRF(t, r)
	if s.PowerW != 344 || s.HasEnergy {
		t.Errorf("sample %+v, want 344 W from Power.PowerControl[0] and no energy", s)
	}
	if !strings.HasPrefix(r.Layout(), "Power") {
		t.Errorf("layout %q", r.Layout())
	}
}

func TestRedfishLayoutChangeFallsBackToLegacyPower(t *testing.T) {
	bmc := bmctest.New(t)
	r := newRedfish(t, bmcConfig(t, bmc))
	if s := readRF(t, r); s.PowerW != 374 {
		t.Fatalf("before: %v W", s.PowerW)
	}
	// A firmware update drops the newer resources: the BMC now answers 404
	// on them. The same read finds the legacy Power resource.
	bmc.Delete(bmctest.EnvironmentMetrics, bmctest.Sensors, bmctest.TotalPower, bmctest.TotalEnergy)
	if s := readRF(t, r); s.PowerW != 344 || s.HasEnergy {
		t.Errorf("after: %+v, want 344 W from Power", s)
	}
	if !strings.HasPrefix(r.Layout(), "Power") {
		t.Errorf("layout %q", r.Layout())
	}
	// A sensor that is there but not enabled also moves the plan.
	bmc2 := bmctest.New(t)
	bmc2.Remove(bmctest.EnvironmentMetrics)
	r2 := newRedfish(t, bmcConfig(t, bmc2))
	readRF(t, r2)
	bmc2.Set(bmctest.TotalPower, "Status", map[string]any{"State": "Absent"})
	bmc2.Remove(bmctest.Sensors)
	if s := readRF(t, r2); s.PowerW != 344 {
		t.Errorf("absent sensor: %+v, want 344 W from Power", s)
	}
}

func TestRedfish503RetryAfter(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.SetBusy(1, "7")
	r := newRedfish(t, bmcConfig(t, bmc))
	_, err := r.Read(context.Background())
	var ra *RetryAfterError
	if !errors.As(err, &ra) || ra.Status != 503 || ra.After != 7*time.Second {
		t.Fatalf("err %v, want RetryAfterError 503 after 7s", err)
	}
	if s := readRF(t, r); s.PowerW != 374 {
		t.Errorf("after the 503: %v W", s.PowerW)
	}
}

func TestRedfishSlowBMCTimesOut(t *testing.T) {
	bmc := bmctest.New(t)
	r := newRedfish(t, bmcConfig(t, bmc))
	readRF(t, r)
	bmc.Hold()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err := r.Read(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want a deadline error", err)
	}
	bmc.Release()
	if s := readRF(t, r); s.PowerW != 374 {
		t.Errorf("after the stall: %v W", s.PowerW)
	}
}

func TestRedfishCredentialsAndTLS(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.SetAuth("monitor", "s3cret-Pa55")
	cfg := bmcConfig(t, bmc)
	cfg.User = "monitor"

	// Password from a file.
	pf := filepath.Join(t.TempDir(), "pw")
	writeFile(t, pf, "s3cret-Pa55\n")
	cfg.PasswordFile = pf
	if s := readRF(t, newRedfish(t, cfg)); s.PowerW != 374 {
		t.Errorf("file password: %v W", s.PowerW)
	}
	// From an env var.
	cfg.PasswordFile, cfg.PasswordEnv = "", "MW_TEST_BMC_PASSWORD"
	t.Setenv("MW_TEST_BMC_PASSWORD", "s3cret-Pa55")
	if s := readRF(t, newRedfish(t, cfg)); s.PowerW != 374 {
		t.Errorf("env password: %v W", s.PowerW)
	}
	// A wrong one: 401, and the error never shows either password.
	t.Setenv("MW_TEST_BMC_PASSWORD", "wrong-Pa55")
	_, err := newRedfish(t, cfg).Read(context.Background())
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 401 {
		t.Fatalf("err %v, want HTTP 401", err)
	}
	if msg := err.Error(); strings.Contains(msg, "Pa55") {
		t.Errorf("error shows a password: %s", msg)
	}

	// TLS: without the CA the certificate is refused; the explicit
	// insecure flag accepts it.
	bmc.SetAuth("", "")
	noCA := bmcConfig(t, bmc)
	noCA.CAFile = ""
	if _, err := newRedfish(t, noCA).Read(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("unverified BMC accepted: %v", err)
	}
	noCA.InsecureSkipVerify = true
	if s := readRF(t, newRedfish(t, noCA)); s.PowerW != 374 {
		t.Errorf("insecure: %v W", s.PowerW)
	}
}

func TestRedfishRefusesForeignLinks(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.Set("/redfish/v1/Chassis", "Members", []any{map[string]any{"@odata.id": "https://evil.example/redfish/v1/Chassis/1U"}})
	_, err := newRedfish(t, bmcConfig(t, bmc)).Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("err %v, want a refused link", err)
	}
}

func TestRedfishChassisByID(t *testing.T) {
	bmc := bmctest.New(t)
	cfg := bmcConfig(t, bmc)
	cfg.Chassis = "1U"
	r := newRedfish(t, cfg)
	if s := readRF(t, r); s.PowerW != 374 {
		t.Errorf("%v W", s.PowerW)
	}
	for _, g := range bmc.Gets(0) {
		if g == "/redfish/v1/Chassis" {
			t.Error("collection read although the chassis is configured")
		}
	}
	cfg.Chassis = "2U"
	if _, err := newRedfish(t, cfg).Read(context.Background()); !errors.Is(err, errNotFound) {
		t.Errorf("unknown chassis: %v", err)
	}
}

// TestPollerRedfishThroughTheBMCFaults runs the Redfish source in the
// poller against the mock BMC: readings land in their windows, a 503
// makes the hwmon meter take over for those windows, and the source says
// which.
func TestPollerRedfishFallsBackToHwmon(t *testing.T) {
	const w = 100 * time.Millisecond
	bmc := bmctest.New(t)
	bmc.Set(bmctest.EnvironmentMetrics, "PowerWatts.Reading", 6400.0)
	root := unpackTree(t, "sys-h100")
	cfg := DefaultConfig()
	cfg.Sources = []string{SourceRedfish, SourceHwmon, SourceModel}
	cfg.Redfish = bmcConfig(t, bmc)
	cfg.Redfish.Timeout, cfg.Redfish.MaxBackoff = 80*time.Millisecond, w
	cfg.Hwmon.SysfsRoot, cfg.Hwmon.Timeout, cfg.Hwmon.MaxBackoff = root, 50*time.Millisecond, w
	p := newTestPoller(t, cfg, w, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	seen := func(src telemetry.NodePowerSource, mw uint32) func() bool {
		return func() bool {
			end := time.Now().UnixNano() / int64(w) * int64(w)
			for k := range int64(3) {
				r := p.Window(end-k*int64(w), h100GPUs)
				if r.HasPower && r.Source == src && r.PowerMW == mw {
					return true
				}
			}
			return false
		}
	}
	waitUntil(t, "a Redfish window at 6400 W", seen(telemetry.NodePowerSource_NODE_POWER_REDFISH, 6_400_000))
	bmc.SetBusy(1<<30, "")
	waitUntil(t, "an hwmon window at 6512.345 W while the BMC is busy", seen(telemetry.NodePowerSource_NODE_POWER_HWMON, 6_512_345))
	bmc.SetBusy(0, "")
	waitUntil(t, "Redfish again", seen(telemetry.NodePowerSource_NODE_POWER_REDFISH, 6_400_000))
}

// TestRedfishPicksTheNodeChassis: on a BMC that lists a GPU baseboard (a
// chassis inside the node's) and a chassis without power first, discovery
// takes the node's own chassis.
func TestRedfishPicksTheNodeChassis(t *testing.T) {
	bmc := bmctest.New(t)
	bmc.Put("/redfish/v1/Chassis/HGX_Baseboard_0", `{"Id": "HGX_Baseboard_0", "ChassisType": "Module",
		"Sensors": {"@odata.id": "/redfish/v1/Chassis/HGX_Baseboard_0/Sensors"},
		"Links": {"ContainedBy": {"@odata.id": "/redfish/v1/Chassis/1U"}}}`)
	bmc.Put("/redfish/v1/Chassis/Riser", `{"Id": "Riser", "ChassisType": "Card"}`)
	bmc.Set("/redfish/v1/Chassis", "Members", []any{
		map[string]any{"@odata.id": "/redfish/v1/Chassis/Gone"},
		map[string]any{"@odata.id": "/redfish/v1/Chassis/Riser"},
		map[string]any{"@odata.id": "/redfish/v1/Chassis/HGX_Baseboard_0"},
		map[string]any{"@odata.id": "/redfish/v1/Chassis/1U"},
	})
	r := newRedfish(t, bmcConfig(t, bmc))
	if s := readRF(t, r); s.PowerW != 374 {
		t.Errorf("%v W", s.PowerW)
	}
	if l := r.Layout(); !strings.Contains(l, "/Chassis/1U/") {
		t.Errorf("layout %q, want the 1U chassis", l)
	}
	// Only the contained one has power: it is used.
	bmc.Set("/redfish/v1/Chassis", "Members", []any{map[string]any{"@odata.id": "/redfish/v1/Chassis/HGX_Baseboard_0"}})
	bmc.Put("/redfish/v1/Chassis/HGX_Baseboard_0/Sensors", `{"Members": [{"@odata.id": "/redfish/v1/Chassis/HGX_Baseboard_0/Sensors/TotalPower"}]}`)
	bmc.Put("/redfish/v1/Chassis/HGX_Baseboard_0/Sensors/TotalPower", `{"Reading": 5600, "ReadingUnits": "W", "Status": {"State": "Enabled"}}`)
	if s := readRF(t, newRedfish(t, bmcConfig(t, bmc))); s.PowerW != 5600 {
		t.Errorf("contained chassis: %v W", s.PowerW)
	}
}
