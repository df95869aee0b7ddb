package nodepower

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/megawatch/megawatch/internal/telemetry"
)

// RAPL reads the CPU component from powercap: the energy counters of every
// package zone (intel-rapl:N, name package-N; AMD exposes the same) and
// their dram subzones (intel-rapl:N:M, name dram). Core and uncore
// subzones are inside the package figure, and psys covers the platform, so
// they are not added. Power is the counters' delta over the time between
// two reads, with wrap-around at max_energy_range_uj.
type RAPL struct {
	root  string
	now   func() time.Time
	zones []raplZone
	last  time.Time
	have  bool
}

type raplZone struct {
	path     string // energy_uj
	maxRange uint64 // max_energy_range_uj
	last     uint64
}

// NewRAPL reads powercap under sysfsRoot. now is the clock (time.Now).
func NewRAPL(sysfsRoot string, now func() time.Time) *RAPL {
	if now == nil {
		now = time.Now
	}
	return &RAPL{root: sysfsRoot, now: now}
}

func (r *RAPL) Name() string                    { return "rapl" }
func (r *RAPL) Kind() telemetry.NodePowerSource { return telemetry.NodePowerSource_NODE_POWER_NONE }

// Read returns the mean CPU (package + DRAM) power since the previous read;
// the first read, and a read after the zones changed, return ErrNoData.
func (r *RAPL) Read(ctx context.Context) (Sample, error) {
	if r.zones == nil {
		z, err := findRAPLZones(r.root)
		if err != nil {
			return Sample{}, err
		}
		r.zones, r.have = z, false
	}
	at := r.now()
	var deltaUJ uint64
	for i := range r.zones {
		z := &r.zones[i]
		b, err := os.ReadFile(z.path)
		if err != nil {
			r.zones = nil // zones may have changed: find them again
			return Sample{}, fmt.Errorf("rapl: %w", err)
		}
		v, err := ParseRAPLCounter(b)
		if err != nil {
			r.zones = nil
			return Sample{}, fmt.Errorf("rapl %s: %w", z.path, err)
		}
		if r.have {
			deltaUJ += counterDelta(z.last, v, z.maxRange)
		}
		z.last = v
	}
	prev, had := r.last, r.have
	r.last, r.have = at, true
	dt := at.Sub(prev)
	if !had || dt <= 0 {
		return Sample{}, ErrNoData
	}
	w := float64(deltaUJ) / dt.Seconds() / 1e6
	if w > maxNodeW {
		return Sample{}, fmt.Errorf("rapl: implausible %.0f W (counter reset?)", w)
	}
	return Sample{PowerW: w}, nil
}

// counterDelta is the increase of a counter that wraps after maxRange
// (the counter counts 0..maxRange). A counter that went backwards without a
// known range (or beyond it) yields 0: a reset, not energy.
func counterDelta(last, v, maxRange uint64) uint64 {
	if v >= last {
		return v - last
	}
	if maxRange == 0 || last > maxRange {
		return 0
	}
	return maxRange - last + v + 1
}

// findRAPLZones lists the package zones and their dram subzones.
func findRAPLZones(root string) ([]raplZone, error) {
	base := filepath.Join(root, "class", "powercap")
	dirs, err := filepath.Glob(filepath.Join(base, "intel-rapl:*"))
	if err != nil {
		return nil, err
	}
	slices.Sort(dirs)
	var zones []raplZone
	for _, d := range dirs {
		id := strings.TrimPrefix(filepath.Base(d), "intel-rapl:")
		name, err := os.ReadFile(filepath.Join(d, "name"))
		if err != nil {
			continue
		}
		n := strings.TrimSpace(string(name))
		top := !strings.Contains(id, ":")
		if !(top && strings.HasPrefix(n, "package")) && !(!top && n == "dram") {
			continue
		}
		z := raplZone{path: filepath.Join(d, "energy_uj")}
		if b, err := os.ReadFile(filepath.Join(d, "max_energy_range_uj")); err == nil {
			z.maxRange, _ = ParseRAPLCounter(b)
		}
		zones = append(zones, z)
	}
	if len(zones) == 0 {
		return nil, fmt.Errorf("rapl: no package zone under %s", base)
	}
	return zones, nil
}

// ParseRAPLCounter decodes energy_uj or max_energy_range_uj (decimal µJ).
func ParseRAPLCounter(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("energy counter %q: %w", truncate(s, 32), err)
	}
	return v, nil
}
