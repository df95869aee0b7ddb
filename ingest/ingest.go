package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Ingester runs the consumers and workers of one ingest process.
type Ingester struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	m       *metrics
	targets []*target
	levels  []string
	down    *downsampler
	now     func() time.Time

	tw        atomic.Pointer[timeWindow]
	lastWrite atomic.Int32 // 0 nothing yet, 1 ok, 2 failing
	inflight  atomic.Int64
	stopping  atomic.Bool
	naked     atomic.Int64

	logLimit   *rate.Limiter
	suppressed atomic.Int64
}

const (
	writeNone int32 = iota
	writeOK
	writeFailing
)

// New checks the config, resolves target tokens and loads the topology
// levels. Nothing is contacted until Run.
func New(cfg Config, nc *nats.Conn, logger *slog.Logger, reg prometheus.Registerer) (*Ingester, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	levels, err := loadLevels(cfg.TopologyFile)
	if err != nil {
		return nil, err
	}
	if _, err := meterTags(levels); err != nil {
		return nil, fmt.Errorf("topology_file: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	in := &Ingester{cfg: cfg, nc: nc, js: js, log: logger, m: m, levels: levels, now: time.Now,
		logLimit: rate.NewLimiter(rate.Every(time.Second), 10)}
	if cfg.GPUEvery > 1 {
		in.down = newDownsampler(cfg.GPUEvery)
	}
	in.tw.Store(&timeWindow{maxAge: cfg.Streams.MaxAge, skew: cfg.FutureSkew})
	for _, t := range cfg.Targets {
		tg, err := newTarget(t, cfg)
		if err != nil {
			in.closeTargets()
			return nil, err
		}
		in.targets = append(in.targets, tg)
	}
	return in, nil
}

func loadLevels(path string) ([]string, error) {
	topo, err := configs.LoadTopology(path)
	if err != nil {
		return nil, fmt.Errorf("topology_file: %w", err)
	}
	return topo.Levels(), nil
}

// Ready is nil when NATS is connected and the last write succeeded (or
// nothing has been written yet).
func (in *Ingester) Ready() error {
	if !in.nc.IsConnected() {
		return errors.New("nats not connected")
	}
	if in.lastWrite.Load() == writeFailing {
		return errors.New("last influxdb write failed")
	}
	for _, t := range in.targets {
		in.expireConflicts(context.Background(), t)
		if cs := t.conflicts.snapshot(); len(cs) > 0 {
			return fmt.Errorf("degraded: target %s: field type conflict %s; these lines are dead-lettered (reason conflict): drop the conflicting series, wait for the shard to end, or write the field under a new name (docs/ingest.md, Field type conflicts)", t.Name, cs[0])
		}
	}
	return nil
}

// Run sets up streams and consumers, optionally ensures the databases, and
// runs the workers until ctx ends. Messages not yet written stay unacked
// and are redelivered, to this or another process.
func (in *Ingester) Run(ctx context.Context) error {
	defer in.closeTargets()
	if in.cfg.EnsureDB {
		for _, t := range in.targets {
			if err := t.sink.ensure(ctx); err != nil {
				return fmt.Errorf("target %s: ensure_db: %w", t.Name, err)
			}
		}
		in.warnLimits(ctx)
	}
	streams := []jetstream.StreamConfig{in.cfg.Streams.PowerStream(), in.cfg.Streams.DeadLetterStream()}
	if in.cfg.Rollups {
		streams = append(streams, in.cfg.Streams.RollupStream())
	}
	if in.cfg.Meters.Enabled {
		streams = append(streams, in.cfg.Streams.MeterStream())
	}
	type job struct {
		cons   jetstream.Consumer
		stream string
	}
	consumer := func(s jetstream.Stream, stream string) (jetstream.Consumer, error) {
		name := in.cfg.Consumer
		switch stream {
		case telemetry.StreamRollup:
			name += "_rollup"
		case telemetry.StreamMeter:
			name = in.cfg.MeterConsumer()
		}
		cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       name,
			Description:   "megawatch ingest → InfluxDB",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       in.cfg.AckWait,
			MaxAckPending: in.cfg.MaxAckPending,
			MaxDeliver:    -1,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", name, stream, err)
		}
		return cons, nil
	}
	var jobs []job
	consumed := 0      // streams consumed (the in-flight budget is split over them)
	lateMeter := false // meters.ensure_stream false and no MEGAWATCH_METER yet
	for _, sc := range streams {
		var s jetstream.Stream
		var err error
		if sc.Name == telemetry.StreamMeter && !in.cfg.Meters.EnsureStream {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			s, err = in.js.Stream(sctx, sc.Name)
			cancel()
			if err != nil {
				// Not there yet: the other streams are not held up; the
				// meter consumer starts once `megawatch meters` creates it.
				lateMeter = true
				consumed++
				continue
			}
		} else {
			s, err = ensureStreamRetry(ctx, in.js, sc, in.log)
		}
		if err != nil {
			return err
		}
		if sc.Name == telemetry.StreamDeadLetter {
			continue
		}
		if sc.Name == telemetry.StreamPower {
			if info, err := s.Info(ctx); err == nil && info.Config.MaxAge > 0 {
				in.tw.Store(&timeWindow{maxAge: info.Config.MaxAge, skew: in.cfg.FutureSkew})
			}
		}
		cons, err := consumer(s, sc.Name)
		if err != nil {
			return err
		}
		jobs = append(jobs, job{cons, sc.Name})
		consumed++
	}
	in.log.Info("ingest running", "workers", in.cfg.Workers, "targets", len(in.targets), "consumer", in.cfg.Consumer, "gpu_every", in.cfg.GPUEvery, "meters", in.cfg.Meters.Enabled)
	// Writes outlive ctx by stop_timeout: a stopping process writes (and
	// acks) what it holds, and NAKs what it cannot write in time.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	var wg sync.WaitGroup
	drained := make(chan struct{}) // closed once no consumer delivers any more
	var mu sync.Mutex              // ccs, and stopping against a late start
	var ccs []jetstream.ConsumeContext
	stopAll := func() {
		mu.Lock()
		in.stopping.Store(true)
		all := slices.Clone(ccs)
		mu.Unlock()
		for _, cc := range all {
			cc.Drain()
		}
		for _, cc := range all {
			select {
			case <-cc.Closed():
			case <-time.After(5 * time.Second):
			}
		}
		close(drained)
	}
	// Half the in-flight budget prefetches, half sits in the workers' batches.
	prefetch := in.cfg.MaxInflightBytes / 2 / consumed
	budget := in.cfg.MaxInflightBytes / 2 / (in.cfg.Workers * consumed)
	start := func(j job) error {
		mu.Lock()
		defer mu.Unlock()
		if in.stopping.Load() {
			return nil
		}
		msgs := make(chan jetstream.Msg, 64)
		cc, err := j.cons.Consume(func(m jetstream.Msg) {
			if in.stopping.Load() {
				in.nakStopping(m)
				return
			}
			select {
			case msgs <- m:
			case <-drained:
				in.nakStopping(m)
			}
		}, jetstream.PullMaxMessagesWithBytesLimit(max(64, in.cfg.BatchLines*in.cfg.Workers/4), max(4096, prefetch)),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				in.warnLimited("consume", "stream", j.stream, "err", err)
			}))
		if err != nil {
			return fmt.Errorf("consume %s: %w", j.stream, err)
		}
		ccs = append(ccs, cc)
		for w := 0; w < in.cfg.Workers; w++ {
			wk := newWorker(in, j.cons, j.stream, budget)
			wg.Go(func() { wk.run(ctx, wctx, msgs, drained) })
		}
		wg.Go(func() { in.pollPending(ctx, j.cons) })
		return nil
	}
	for _, j := range jobs {
		if err := start(j); err != nil {
			stopAll()
			wcancel()
			wg.Wait()
			return err
		}
	}
	if lateMeter {
		wg.Go(func() {
			s, err := waitStream(ctx, in.js, telemetry.StreamMeter, in.log)
			if err != nil {
				return // stopping
			}
			cons, err := consumer(s, telemetry.StreamMeter)
			if err == nil {
				err = start(job{cons, telemetry.StreamMeter})
			}
			if err != nil && ctx.Err() == nil {
				in.log.Error("meter reports are not ingested", "err", err)
			}
		})
	}
	<-ctx.Done()
	in.log.Info("stopping: writing what is held, NAKing the rest", "stop_timeout", in.cfg.StopTimeout)
	stopTimer := time.AfterFunc(in.cfg.StopTimeout, wcancel)
	defer stopTimer.Stop()
	stopAll()
	wg.Wait()
	in.log.Info("stopped", "naked", in.naked.Load())
	return nil
}

// warnLimits logs a warning for each server limit the topology exceeds
// (see CheckLimits).
func (in *Ingester) warnLimits(ctx context.Context) {
	topo, err := configs.LoadTopology(in.cfg.TopologyFile)
	if err != nil {
		return
	}
	exp := ExpectedSeries(topo, DefaultGPUsPerNode)
	for _, t := range in.targets {
		s, ok := t.sink.(*influxSink)
		if !ok {
			continue
		}
		l, err := s.limits(ctx)
		if err != nil {
			in.log.Warn("cannot read influxdb limits", "target", t.Name, "err", err)
			continue
		}
		for _, w := range l.Warnings(exp, t.Name) {
			in.log.Warn("influxdb limit", "warning", w)
		}
	}
}

// DefaultGPUsPerNode is the node size the scale checks assume.
const DefaultGPUsPerNode = 8

// nakStopping NAKs a message delivered while stopping: JetStream
// redelivers it at once instead of after ack_wait.
func (in *Ingester) nakStopping(m jetstream.Msg) {
	_ = m.Nak()
	in.naked.Add(1)
	in.m.stopNaked.Inc()
}

func ensureStreamRetry(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig, log *slog.Logger) (jetstream.Stream, error) {
	return retryStream(ctx, log, "waiting for jetstream", sc.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return natsx.EnsureStream(ctx, js, sc)
	})
}

// waitStream waits for stream name to exist (meters.ensure_stream false:
// `megawatch meters` creates MEGAWATCH_METER).
func waitStream(ctx context.Context, js jetstream.JetStream, name string, log *slog.Logger) (jetstream.Stream, error) {
	return retryStream(ctx, log, "waiting for stream (meters.ensure_stream is false)", name, func(ctx context.Context) (jetstream.Stream, error) {
		return js.Stream(ctx, name)
	})
}

// retryStream calls get (5 s each) every 500 ms until it succeeds or ctx
// ends, warning every tenth attempt.
func retryStream(ctx context.Context, log *slog.Logger, msg, name string, get func(context.Context) (jetstream.Stream, error)) (jetstream.Stream, error) {
	for attempt := 0; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := get(sctx)
		cancel()
		if err == nil {
			return s, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if attempt%10 == 0 {
			log.Warn(msg, "stream", name, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (in *Ingester) pollPending(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	name := cons.CachedInfo().Name
	for {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(qctx)
		cancel()
		if err == nil {
			in.m.pending.WithLabelValues(name).Set(float64(info.NumPending))
			in.m.ackPending.WithLabelValues(name).Set(float64(info.NumAckPending))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (in *Ingester) closeTargets() {
	for _, t := range in.targets {
		_ = t.sink.close()
	}
	in.targets = nil
}

// route returns the first target whose filter matches subject.
func (in *Ingester) route(subject string) *target {
	for _, t := range in.targets {
		if t.matches(subject) {
			return t
		}
	}
	return nil
}

// deadLetter publishes msg to megawatch.v1.deadletter.<reason> with the
// reason and error in headers and waits for the stream to store it.
func (in *Ingester) deadLetter(ctx context.Context, msg jetstream.Msg, reason string, cause error) error {
	return in.publishDeadLetter(ctx, msg, reason, cause, msg.Data(), nil)
}

// deadLetterID is the dead letter's Nats-Msg-Id: derived from the
// original's (its Msg-Id, else its stream and sequence), so a poison
// message redelivered after a crash is stored once.
func deadLetterID(msg jetstream.Msg, reason string) string {
	id := msg.Headers().Get(telemetry.HeaderMsgID)
	if id == "" {
		md, err := msg.Metadata()
		if err != nil {
			return ""
		}
		id = md.Stream + ":" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	return "dl:" + reason + ":" + id
}

func (in *Ingester) publishDeadLetter(ctx context.Context, msg jetstream.Msg, reason string, cause error, payload []byte, extra map[string]string) error {
	subj, err := telemetry.DeadLetterSubject(reason)
	if err != nil {
		return err
	}
	errText := cause.Error()
	if len(errText) > 1024 {
		errText = errText[:1024]
	}
	out := nats.NewMsg(subj)
	out.Data = payload
	out.Header.Set(telemetry.HeaderDeadReason, reason)
	out.Header.Set(telemetry.HeaderDeadError, errText)
	out.Header.Set(telemetry.HeaderDeadFrom, msg.Subject())
	if id := deadLetterID(msg, reason); id != "" {
		out.Header.Set(telemetry.HeaderMsgID, id)
	}
	for k, v := range extra {
		out.Header.Set(k, v)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := in.js.PublishMsg(pctx, out); err != nil {
		return fmt.Errorf("dead-letter %s: %w", subj, err)
	}
	in.m.deadLetter.WithLabelValues(reason).Inc()
	if in.logLimit.Allow() {
		in.log.Warn("message dead-lettered", "reason", reason, "subject", msg.Subject(), "err", errText, "suppressed", in.suppressed.Swap(0))
	} else {
		in.suppressed.Add(1)
	}
	return nil
}

// logf logs at a bounded rate (write failures during an outage).
func (in *Ingester) warnLimited(msg string, args ...any) {
	if in.logLimit.Allow() {
		in.log.Warn(msg, append(args, "suppressed", in.suppressed.Swap(0))...)
	} else {
		in.suppressed.Add(1)
	}
}
