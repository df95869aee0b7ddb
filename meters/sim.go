package meters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/megawatch/megawatch/collector/sim"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/megawatch/megawatch/internal/topology"
)

// ProtocolSim is the protocol of a simulated meter (reports carry
// METER_PROTOCOL_UNSPECIFIED, metrics protocol="sim").
const ProtocolSim = "sim"

// SimMetersConfig is how `megawatch meters --sim` makes its meters: which
// to generate when the topology defines none, and the feed losses and non-IT
// load of each metered domain. The nodes come from Config.Sim, the same
// model as the simulated collectors'.
type SimMetersConfig struct {
	// Generate lists the levels that get one meter per domain when the
	// topology defines no meters at all (rack: pdu-<path>, row: bcm-<path>,
	// hall: swgr-<path>, site: utility-<path>, another level:
	// <level>-<path>, with the domain path joined by "-").
	Generate []string `yaml:"generate"`
	// Feeds: the first entry that matches a meter gives its loss and non-IT
	// load; a meter no entry matches reads its nodes' power exactly.
	Feeds []SimFeed `yaml:"feeds"`
}

// SimFeed is the loss and non-IT load of the meters it matches (every
// selector given must match; globs as in path.Match).
type SimFeed struct {
	Level  string `yaml:"level"`  // glob on the metered domain's level
	Domain string `yaml:"domain"` // glob on the metered domain's path joined by "/", e.g. "dc1/h1/*"
	Meter  string `yaml:"meter"`  // glob on the meter name
	// LossPct: losses between the meter and the nodes' power supplies
	// (UPS, transformer, busway, cables) as a percentage of the nodes' power.
	LossPct float64 `yaml:"loss_pct"`
	// NonITW + NonITPerNodeW × nodes: the load on the metered feed that is
	// not a node (CDUs, fans, lighting, controls), in W.
	NonITW        float64 `yaml:"non_it_w"`
	NonITPerNodeW float64 `yaml:"non_it_per_node_w"`
}

// DefaultSimMetersConfig: a PDU per rack and a switchgear meter per hall
// when the topology has no meters; rack PDUs read their nodes exactly (node
// power already holds the PSU losses), a row's branch circuits lose 1 % in
// the busway, a hall's switchgear sees 4 % UPS and transformer loss and
// 700 W of cooling distribution, fans and lighting per node.
func DefaultSimMetersConfig() SimMetersConfig {
	return SimMetersConfig{
		Generate: []string{topology.LevelRack, topology.LevelHall},
		Feeds: []SimFeed{
			{Level: topology.LevelRack},
			{Level: topology.LevelRow, LossPct: 1},
			{Level: topology.LevelHall, LossPct: 4, NonITPerNodeW: 700},
		},
	}
}

// Validate names every problem with its key under "sim_meters.".
func (c SimMetersConfig) Validate() error {
	var errs []error
	bad := func(key, f string, a ...any) {
		errs = append(errs, fmt.Errorf("sim_meters.%s: %s", key, fmt.Sprintf(f, a...)))
	}
	for i, l := range c.Generate {
		if err := telemetry.ValidateToken(l); err != nil {
			bad(fmt.Sprintf("generate[%d]", i), "level %v", err)
		}
	}
	for i, f := range c.Feeds {
		k := fmt.Sprintf("feeds[%d].", i)
		for name, g := range map[string]string{"level": f.Level, "domain": f.Domain, "meter": f.Meter} {
			if _, err := path.Match(g, ""); err != nil {
				bad(k+name, "pattern %q: %v", g, err)
			}
		}
		if !(f.LossPct >= 0 && f.LossPct <= 100) {
			bad(k+"loss_pct", "must be 0..100, got %v", f.LossPct)
		}
		if !(f.NonITW >= 0 && f.NonITW <= 1e10) {
			bad(k+"non_it_w", "must be 0..1e10, got %v", f.NonITW)
		}
		if !(f.NonITPerNodeW >= 0 && f.NonITPerNodeW <= 1e6) {
			bad(k+"non_it_per_node_w", "must be 0..1e6, got %v", f.NonITPerNodeW)
		}
	}
	return errors.Join(errs...)
}

func (f SimFeed) matches(m *topology.Meter) bool {
	ok := func(pat, s string) bool {
		if pat == "" {
			return true
		}
		m, _ := path.Match(pat, s)
		return m
	}
	return ok(f.Level, m.Domain.Level) && ok(f.Domain, m.Domain.Key()) && ok(f.Meter, m.Name)
}

// feed is the SimFeed of m (the zero one when none matches).
func (c SimMetersConfig) feed(m *topology.Meter) SimFeed {
	for _, f := range c.Feeds {
		if f.matches(m) {
			return f
		}
	}
	return SimFeed{}
}

// SimMeter is what a simulated meter reads: Share × (Σ node power ×
// (1 + LossPct/100) + NonITW), Σ over Nodes (topology node indices).
type SimMeter struct {
	Meter   *topology.Meter
	Nodes   []int
	Share   float64 // the meter's part of its domain: 1/feeds × (1/3 for a single phase)
	LossPct float64
	NonITW  float64 // NonITW + NonITPerNodeW × len(Nodes)
}

// Value is the meter's reading given each node's node power in mW
// (indexed like the topology's nodes).
func (s SimMeter) Value(nodeMW func(i int) uint32) float64 {
	var sum uint64
	for _, i := range s.Nodes {
		sum += uint64(nodeMW(i))
	}
	return s.Share * (float64(sum)/1000*(1+s.LossPct/100) + s.NonITW)
}

// SimMeters are the simulated meters of topo: its own meter definitions
// (their protocol and address ignored), or when it has none, one per domain
// of each cfg.Generate level; with their nodes, share, loss and non-IT load.
func SimMeters(topo *topology.Topology, cfg SimMetersConfig) ([]SimMeter, error) {
	defs := topo.Meters()
	generated := len(defs) == 0
	if generated {
		var err error
		if defs, err = generate(topo, cfg.Generate); err != nil {
			return nil, err
		}
	}
	// The nodes under each domain.
	under := make(map[*topology.Domain][]int)
	for _, n := range topo.Nodes() {
		for d := n.Rack; d != nil; d = d.Parent {
			under[d] = append(under[d], n.Index)
		}
	}
	out := make([]SimMeter, 0, len(defs))
	for _, def := range defs {
		m := *def
		m.Protocol, m.Address, m.SNMP, m.Modbus = ProtocolSim, "sim", nil, nil
		f := cfg.feed(&m)
		nodes := under[def.Domain]
		out = append(out, SimMeter{Meter: &m, Nodes: nodes, Share: share(def), LossPct: f.LossPct,
			NonITW: f.NonITW + f.NonITPerNodeW*float64(len(nodes))})
	}
	return out, nil
}

// share is the part of its domain's supply a meter carries: the domain's
// feeds share it equally (a meter with feed "a" on a domain whose meters
// name feeds a and b carries half), and a single phase (L1, L2, L3) is a
// third of the three.
func share(m *topology.Meter) float64 {
	s := 1.0
	if m.Feed != "" {
		feeds := map[string]bool{}
		for _, o := range m.Domain.Meters {
			if o.Feed != "" {
				feeds[o.Feed] = true
			}
		}
		s /= float64(max(len(feeds), 1))
	}
	switch strings.ToUpper(m.Phase) {
	case "L1", "L2", "L3":
		s /= 3
	}
	return s
}

// generate makes one meter per domain of each level.
func generate(topo *topology.Topology, levels []string) ([]*topology.Meter, error) {
	prefix := map[string]string{topology.LevelRack: "pdu", topology.LevelRow: "bcm", topology.LevelHall: "swgr", topology.LevelSite: "utility"}
	seen := map[string]string{}
	var out []*topology.Meter
	for i, l := range levels {
		ds := topo.DomainsAt(l)
		if len(ds) == 0 {
			return nil, fmt.Errorf("sim_meters.generate[%d]: %s has no level %q (levels: %s)", i, topo.Source(), l, strings.Join(topo.Levels(), ", "))
		}
		p, ok := prefix[l]
		if !ok {
			p = l
		}
		for _, d := range ds {
			name := p + "-" + strings.Join(d.Path, "-")
			if err := telemetry.ValidateToken(name); err != nil {
				return nil, fmt.Errorf("sim_meters.generate[%d]: meter for %s: %w", i, d.Key(), err)
			}
			if prev, dup := seen[name]; dup {
				return nil, fmt.Errorf("sim_meters.generate[%d]: meter name %s for %s is also the name for %s", i, name, d.Key(), prev)
			}
			seen[name] = d.Key()
			out = append(out, &topology.Meter{Name: name, Protocol: ProtocolSim, Address: "sim", Domain: d,
				Key: fmt.Sprintf("sim_meters.generate[%d]", i), Source: topo.Source()})
		}
	}
	return out, nil
}

// NewSim builds a poller of simulated meters (SimMeters of cfg.SimMeters)
// within cfg.Scope, read from the node model cfg.Sim: every window it
// computes each covered node's true power (GPUs + host, as the simulated
// BMC reports it, whatever cfg.Sim.NodePower says the collectors report)
// with the same model and window as the simulated collectors, so a meter
// equals the sum of its nodes' node_power_mw × (1 + loss) + non-IT load.
// meter_silent faults of cfg.Sim make a meter not answer (stale).
func NewSim(cfg Config, topo *topology.Topology, js jetstream.JetStream, logger *slog.Logger, reg prometheus.Registerer) (*Poller, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	sms, err := SimMeters(topo, cfg.SimMeters)
	if err != nil {
		return nil, err
	}
	byDef := make(map[*topology.Meter]SimMeter, len(sms))
	defs := make([]*topology.Meter, 0, len(sms))
	for _, s := range sms {
		byDef[s.Meter] = s
		defs = append(defs, s.Meter)
	}
	if defs, err = scoped(cfg, topo, defs); err != nil {
		return nil, err
	}
	// One fleet of the nodes the meters in scope cover.
	slot := map[int]int{} // topology node index -> fleet index
	var locs []telemetry.Location
	for _, d := range defs {
		for _, i := range byDef[d].Nodes {
			if _, ok := slot[i]; !ok {
				slot[i] = len(locs)
				locs = append(locs, topo.Nodes()[i].Location)
			}
		}
	}
	scfg := cfg.Sim
	scfg.NodePower = sim.NodePowerRedfish // a meter reads what the nodes draw
	fleet, err := sim.NewFleet(scfg, locs)
	if err != nil {
		return nil, err
	}
	c := &simCampus{fleet: fleet, window: cfg.Interval}
	rs := make(map[*topology.Meter]Reader, len(defs))
	for _, d := range defs {
		s := byDef[d]
		idx := make([]int, len(s.Nodes))
		for k, i := range s.Nodes {
			idx[k] = slot[i]
		}
		s.Nodes = idx
		rs[d] = &simReader{c: c, m: s, faults: cfg.Sim}
	}
	p, err := newPoller(cfg, defs, rs, nil, js, logger, reg)
	if err != nil {
		return nil, err
	}
	p.log.Info("simulated meters", "meters", len(defs), "nodes", len(locs), "generated", len(topo.Meters()) == 0)
	return p, nil
}

// simCampus computes every covered node's node power once per window, for
// all the meters that read it.
type simCampus struct {
	fleet   *sim.Fleet
	window  time.Duration
	compute sync.Mutex // windows are computed one at a time, in order: fleet nodes must advance
	mu      sync.Mutex
	wins    []*simWindow
}

type simWindow struct {
	endNs int64
	done  chan struct{}
	mw    []uint32
}

// at is every node's node power (mW) for the window ending at end.
func (c *simCampus) at(ctx context.Context, end time.Time) ([]uint32, error) {
	c.mu.Lock()
	var w *simWindow
	for _, x := range c.wins {
		if x.endNs == end.UnixNano() {
			w = x
		}
	}
	first := w == nil
	if first {
		w = &simWindow{endNs: end.UnixNano(), done: make(chan struct{})}
		c.wins = append(c.wins, w)
		if len(c.wins) > 8 {
			c.wins = c.wins[1:]
		}
	}
	c.mu.Unlock()
	if first {
		go c.fill(w, end)
	}
	select {
	case <-w.done:
		return w.mw, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("simulated nodes not computed in time: %w", ctx.Err())
	}
}

func (c *simCampus) fill(w *simWindow, end time.Time) {
	c.compute.Lock()
	defer c.compute.Unlock()
	n := c.fleet.Len()
	mw := make([]uint32, n)
	workers := min(runtime.GOMAXPROCS(0), max(n/256, 1))
	var wg sync.WaitGroup
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var r telemetry.NodeReport
			for i := k; i < n; i += workers {
				c.fleet.Report(&r, i, end, c.window, c.window)
				mw[i] = r.GetNodePowerMw()
			}
		}()
	}
	wg.Wait()
	w.mw = mw
	close(w.done)
}

// simReader is one simulated meter.
type simReader struct {
	c      *simCampus
	m      SimMeter // Nodes: fleet indices
	faults sim.Config
}

var errSimSilent = errors.New("simulated meter not answering (meter_silent fault)")

func (r *simReader) ReadWindow(ctx context.Context, end time.Time, _ time.Duration) (Reading, error) {
	if r.faults.MeterSilent(r.m.Meter.Name, end) {
		<-ctx.Done() // a silent meter does not answer: the read times out
		return Reading{}, fmt.Errorf("%w: %w", errSimSilent, ctx.Err())
	}
	mw, err := r.c.at(ctx, end)
	if err != nil {
		return Reading{}, err
	}
	v := r.m.Value(func(i int) uint32 { return mw[i] })
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Reading{}, fmt.Errorf("simulated meter: value %v", v)
	}
	return Reading{PowerW: v}, nil
}

// Read (probe) reads the window that ended last.
func (r *simReader) Read(ctx context.Context) (Reading, error) {
	return r.ReadWindow(ctx, time.Now().Truncate(r.c.window), r.c.window)
}

func (*simReader) ErrorKind(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return "other"
}

func (*simReader) Close() error { return nil }
