package nodepower

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// maxNodeW bounds a plausible node reading (1 MW): beyond it a value is a
// decoding or unit error, not a node.
const maxNodeW = 1_000_000

// Hwmon reads the ACPI power meter (driver acpi_power_meter: hwmon device
// named power_meter) under root/class/hwmon: power1_average in µW.
type Hwmon struct {
	root string
	dir  string // the power_meter device, found on first use
}

// NewHwmon reads the power meter under sysfsRoot ("/sys").
func NewHwmon(sysfsRoot string) *Hwmon { return &Hwmon{root: sysfsRoot} }

func (h *Hwmon) Name() string                    { return SourceHwmon }
func (h *Hwmon) Kind() telemetry.NodePowerSource { return telemetry.NodePowerSource_NODE_POWER_HWMON }

// errNoMeter: the host has no ACPI power meter.
var errNoMeter = errors.New("no hwmon device named power_meter")

// Read returns the meter's average power.
func (h *Hwmon) Read(ctx context.Context) (Sample, error) {
	if h.dir == "" {
		d, err := findPowerMeter(h.root)
		if err != nil {
			return Sample{}, err
		}
		h.dir = d
	}
	var b []byte
	var err error
	for _, f := range []string{"power1_average", "power1_input"} {
		if b, err = os.ReadFile(filepath.Join(h.dir, f)); err == nil {
			break
		}
	}
	if err != nil {
		h.dir = "" // the device may have gone (driver reload): look again
		return Sample{}, fmt.Errorf("hwmon: %w", err)
	}
	uw, err := ParseHwmonMicrowatts(b)
	if err != nil {
		return Sample{}, fmt.Errorf("hwmon %s: %w", h.dir, err)
	}
	return Sample{PowerW: float64(uw) / 1e6}, nil
}

// findPowerMeter returns the first hwmon device (by name order) whose name
// file says power_meter.
func findPowerMeter(root string) (string, error) {
	dirs, err := filepath.Glob(filepath.Join(root, "class", "hwmon", "hwmon*"))
	if err != nil {
		return "", err
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "name"))
		if err == nil && strings.TrimSpace(string(b)) == "power_meter" {
			return d, nil
		}
		// Some kernels put the attributes under device/.
		b, err = os.ReadFile(filepath.Join(d, "device", "name"))
		if err == nil && strings.TrimSpace(string(b)) == "power_meter" {
			return filepath.Join(d, "device"), nil
		}
	}
	return "", errNoMeter
}

// ParseHwmonMicrowatts decodes a hwmon power attribute (decimal µW and a
// newline). Values above 1 MW are rejected.
func ParseHwmonMicrowatts(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("power attribute %q: %w", truncate(s, 32), err)
	}
	if v > maxNodeW*1e6 {
		return 0, fmt.Errorf("power attribute %d µW is beyond %d W", v, maxNodeW)
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
