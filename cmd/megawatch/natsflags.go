package main

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/nats-io/nats.go"
)

// natsFlags are the connection flags of the client tools (tap, loadgen):
// the same keys as a config's nats: block.
type natsFlags struct {
	servers, creds, ca, cert, key *string
	timeout                       *time.Duration
}

func addNATSFlags(fs *flag.FlagSet, defServers string) *natsFlags {
	return &natsFlags{
		servers: fs.String("nats", defServers, "NATS server URLs, comma-separated"),
		creds:   fs.String("creds", "", "NATS user creds file (nats.creds_file), e.g. creds/tap.creds from `megawatch nats-accounts`"),
		ca:      fs.String("tls-ca", "", "CA that signed the server certificate (nats.tls_ca_file)"),
		cert:    fs.String("tls-cert", "", "client certificate (nats.tls_cert_file), when the server verifies clients"),
		key:     fs.String("tls-key", "", "client key (nats.tls_key_file)"),
		timeout: fs.Duration("connect-timeout", 10*time.Second, "give up when NATS cannot be reached (or refuses the creds) within this time"),
	}
}

// apply overrides cfg with the flags that were given.
func (f *natsFlags) apply(cfg *natsx.Config) error {
	if *f.servers != "" {
		cfg.Servers = strings.Split(*f.servers, ",")
	}
	for dst, v := range map[*string]string{&cfg.CredsFile: *f.creds, &cfg.TLSCAFile: *f.ca, &cfg.TLSCertFile: *f.cert, &cfg.TLSKeyFile: *f.key} {
		if v != "" {
			*dst = v
		}
	}
	if *f.timeout <= 0 {
		return fmt.Errorf("%w: --connect-timeout must be positive", errUsage)
	}
	if err := cfg.Validate("nats"); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// connectOnce connects without retrying in the background: a client tool
// must say that NATS is unreachable (or refuses it) instead of waiting
// silently. It tries every server until the timeout.
func (f *natsFlags) connectOnce(cfg natsx.Config) (*nats.Conn, error) {
	deadline := time.Now().Add(*f.timeout)
	var lastErr error
	for {
		left := time.Until(deadline)
		nc, err := natsx.Connect(cfg, nil, nats.RetryOnFailedConnect(false), nats.Timeout(min(max(left, time.Second), 5*time.Second)))
		if err == nil {
			return nc, nil
		}
		lastErr = err
		if time.Now().Add(250*time.Millisecond).After(deadline) || isAuthErr(err) {
			return nil, fmt.Errorf("NATS not reachable within %s: %w", *f.timeout, lastErr)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// isAuthErr: retrying cannot help.
func isAuthErr(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "authorization") || strings.Contains(s, "authentication") || strings.Contains(s, "certificate")
}
