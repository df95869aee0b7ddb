package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/obs"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// segEntries is how many reports one disk-buffer segment holds.
const segEntries = 256

// Collector samples the GPUs of one node and publishes its reports.
type Collector struct {
	cfg     Config
	loc     telemetry.Location
	nc      *nats.Conn
	js      jetstream.JetStream
	logger  *slog.Logger
	m       *metrics
	sampler *sampler
	np      *nodepower.Poller // nil: no node power
	pub     *publisher
	emitted atomic.Bool
	runOnce sync.Once
	live    *obs.Heartbeat // beats once per window summarised (/healthz)
}

// New sets up a collector for the GPUs of dev (an initialised
// nvml.Interface: nvml.New() after Init, the simulator, or a mock) at loc.
// It opens the disk buffer when cfg.BufferDir is set and takes what a
// previous process left there. Metrics are registered on reg (nil: none)
// with a constant node label.
func New(cfg Config, dev nvml.Interface, loc telemetry.Location, nc *nats.Conn, logger *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Collector, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("collector config: %w", err)
	}
	subject, err := telemetry.PowerSubject(loc)
	if err != nil {
		return nil, fmt.Errorf("collector location: %w", err)
	}
	if nc == nil {
		return nil, errors.New("collector: nil NATS connection")
	}
	logger = logger.With("node", loc.Node)
	m := newMetrics(reg, loc.Node)

	gpus, err := openGPUs(dev, m)
	if err != nil {
		return nil, err
	}

	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	var disk *diskLog
	var old []entry
	if cfg.BufferDir != "" {
		if disk, old, err = openDiskLog(cfg.BufferDir, segEntries, logger); err != nil {
			return nil, err
		}
		if len(old) > 0 {
			logger.Info("replaying reports from the disk buffer", "reports", len(old), "dir", cfg.BufferDir)
		}
	}
	q := newQueue(cfg.BufferMax, cfg.BufferMaxBytes, disk)
	q.load(old)

	c := &Collector{cfg: cfg, loc: loc, nc: nc, js: js, logger: logger, m: m, live: obs.NewHeartbeat(max(15*time.Second, 30*cfg.Window))}
	c.pub = newPublisher(nc, js, q, cfg.MaxPending, m, logger)
	c.sampler = newSampler(cfg, loc, subject, gpus, rand.Uint64(), m, logger, nil)
	if err := c.setupNodePower(reg, opts); err != nil {
		return nil, err
	}
	// Not "ready": that is /readyz, once a window was summarised and NATS
	// is connected.
	logger.Info("collector started", "subject", subject, "gpus", len(gpus), "window", cfg.Window, "slot", cfg.Slot)
	if !nc.IsConnected() {
		logger.Warn("NATS not connected: reports are buffered until it is, and /readyz says not ready", "nats_status", nc.Status().String())
	}
	return c, nil
}

// Run samples and publishes until ctx ends, then flushes what it can
// within cfg.FlushTimeout. It may be called once.
func (c *Collector) Run(ctx context.Context) error {
	first := false
	c.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("collector: Run called twice")
	}
	if c.cfg.EnsureStream {
		if _, err := natsx.EnsureStream(ctx, c.js, c.cfg.Streams.PowerStream()); err != nil {
			c.logger.Warn("power stream not ensured; publishing anyway", "err", err)
		}
	}
	in := make(chan entry, 16)
	c.sampler.emit = func(e entry) {
		c.emitted.Store(true)
		c.live.Beat()
		select {
		case in <- e:
		case <-ctx.Done():
		}
	}
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		c.pub.run(ctx, in, c.cfg.FlushTimeout)
	}()
	npDone := c.runNodePower(ctx)
	c.sampler.run(ctx)
	<-npDone
	<-pubDone
	if d := c.pub.q.disk; d != nil {
		if err := d.close(); err != nil {
			return fmt.Errorf("buffer_dir: %w", err)
		}
	}
	return nil
}

// Live is the sampling loop's heartbeat: /healthz fails once no window
// was summarised for 30 windows (at least 15 s), e.g. a hung NVML call.
func (c *Collector) Live() *obs.Heartbeat { return c.live }

// Ready is nil once a report was produced and NATS is connected.
func (c *Collector) Ready() error {
	if !c.emitted.Load() {
		return errors.New("no window summarised yet")
	}
	if !c.nc.IsConnected() {
		return fmt.Errorf("nats not connected (%s); reports are buffered", c.nc.Status())
	}
	return nil
}

// openGPUs gets a handle and the inventory of every GPU of dev.
func openGPUs(dev nvml.Interface, m *metrics) ([]*gpuReader, error) {
	count, ret := dev.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml device count: %w", ret)
	}
	gpus := make([]*gpuReader, count)
	for i := range count {
		d, ret := dev.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml device %d: %w", i, ret)
		}
		g := &gpuReader{index: i, dev: d, useField: true, m: m.forGPU(i), now: time.Now}
		if u, ret := d.GetUUID(); ret == nvml.SUCCESS {
			g.uuid = u
		}
		if n, ret := d.GetName(); ret == nvml.SUCCESS {
			g.model = n
		}
		gpus[i] = g
	}
	return gpus, nil
}
