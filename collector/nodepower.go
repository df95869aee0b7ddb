package collector

import (
	"context"

	"github.com/megawatch/megawatch/collector/nodepower"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/prometheus/client_golang/prometheus"
)

// Option changes what New builds.
type Option func(*options)

type options struct {
	np []nodepower.Option
}

// WithNodePowerSource puts src first in the node-power preference order,
// polled with pc (the simulator's BMC for `collector --sim`; tests).
func WithNodePowerSource(src nodepower.Source, pc nodepower.PollConfig) Option {
	return func(o *options) { o.np = append(o.np, nodepower.WithSource(src, pc)) }
}

// nodePowerReader answers a window's node figure from cached readings; it
// never waits for a source.
type nodePowerReader interface {
	Window(endNs int64, g nodepower.GPUs) nodepower.Result
}

// setupNodePower builds the node-power poller of c.cfg.NodePower.
func (c *Collector) setupNodePower(reg prometheus.Registerer, opts []Option) error {
	var o options
	for _, f := range opts {
		f(&o)
	}
	np, err := nodepower.New(c.cfg.NodePower, c.cfg.Window, c.loc.Node, c.logger, reg, o.np...)
	if err != nil {
		return err
	}
	if !np.Enabled() {
		return nil
	}
	c.np = np
	c.sampler.np = np
	c.logger.Info("node power", "sources", np.Sources())
	return nil
}

// runNodePower polls the node-power sources in their own goroutines (never
// in the sampler's) until ctx ends; the channel closes when they are done.
func (c *Collector) runNodePower(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	if c.np == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		c.np.Run(ctx)
	}()
	return done
}

// nodePower fills rep's node-power fields from the cached readings: the
// mean over the window of the first source in order that has one, or the
// model from the GPUs of rep; absent when none has.
func (s *sampler) nodePower(rep *telemetry.NodeReport) {
	if s.np == nil {
		return
	}
	g := nodepower.GPUs{Count: len(rep.Gpus), AllOK: len(rep.Gpus) > 0}
	for _, gpu := range rep.Gpus {
		if gpu.Health == telemetry.Health_HEALTH_OK && gpu.PowerMw != nil {
			g.SumMW += uint64(*gpu.PowerMw)
		} else {
			g.AllOK = false
		}
	}
	if len(s.gpus) > 0 {
		g.ModelID = s.gpus[0].model
	}
	s.np.Window(rep.WindowEndUnixNs, g).Apply(rep)
}
