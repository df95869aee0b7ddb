package natsx

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Options turns the config into nats.go options: reconnect forever with
// capped exponential backoff and jitter, credentials, TLS, and slog logging
// of connection events. Extra options are appended.
func (c Config) Options(logger *slog.Logger, extra ...nats.Option) ([]nats.Option, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	maxWait := c.ReconnectWaitMax
	if maxWait <= 0 {
		maxWait = 5 * time.Second
	}
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1), // never buffer silently inside nats.go: callers own buffering
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := 100 * time.Millisecond << min(attempts, 10)
			if d > maxWait {
				d = maxWait
			}
			return d/2 + rand.N(d/2+1)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "err", err)
			} else {
				logger.Info("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			logger.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	switch {
	case c.CredsFile != "":
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed file: %w", err)
		}
		opts = append(opts, o)
	case c.User != "":
		pw, err := c.password()
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(c.User, pw))
	}
	prefix, err := c.inboxPrefix()
	if err != nil {
		return nil, err
	}
	if prefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(prefix))
	}
	if c.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLSCAFile))
	}
	if c.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLSCertFile, c.TLSKeyFile))
	}
	return append(opts, extra...), nil
}

// Connect connects (retrying in the background if no server is up yet).
func Connect(c Config, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := c.Options(logger, extra...)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(strings.Join(c.Servers, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", redact(c.Servers), err)
	}
	return nc, nil
}

// redact removes user info from server URLs for error messages and logs.
func redact(servers []string) string {
	out := make([]string, len(servers))
	for i, s := range servers {
		if at := strings.LastIndex(s, "@"); at >= 0 {
			if p := strings.Index(s, "://"); p >= 0 && p < at {
				s = s[:p+3] + "[redacted]" + s[at:]
			}
		}
		out[i] = s
	}
	return strings.Join(out, ",")
}
