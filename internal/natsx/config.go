// Package natsx holds megawatch's NATS plumbing: connection options with
// credentials and TLS, reconnect-forever behaviour, idempotent JetStream
// stream setup, and an embedded server for the demo.
package natsx

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Config is how a subcommand connects to NATS. Secrets are files or env
// vars, never inline values, so they never end up in a config dump or a log.
type Config struct {
	Servers      []string `yaml:"servers"`        // nats://host:4222, ...
	Name         string   `yaml:"name"`           // client name shown by the server
	CredsFile    string   `yaml:"creds_file"`     // JWT + nkey .creds
	NKeySeedFile string   `yaml:"nkey_seed_file"` // nkey seed file
	User         string   `yaml:"user"`
	PasswordEnv  string   `yaml:"password_env"`  // env var holding the password
	PasswordFile string   `yaml:"password_file"` // file holding the password
	TLSCAFile    string   `yaml:"tls_ca_file"`
	TLSCertFile  string   `yaml:"tls_cert_file"`
	TLSKeyFile   string   `yaml:"tls_key_file"`
	// ReconnectWaitMax caps the reconnect backoff (it starts at 100 ms).
	ReconnectWaitMax time.Duration `yaml:"reconnect_wait_max"`
	// InboxPrefix is the subject prefix of this connection's reply inboxes
	// (JetStream acks, fetches, KV replies). Empty: "_INBOX.<user>" where
	// <user> is the name in the creds file's user JWT, so that a user may
	// be allowed to subscribe to its own inboxes only (`megawatch
	// nats-accounts` grants "_INBOX.<user>.>"); without a creds file,
	// nats.go's default "_INBOX".
	InboxPrefix string `yaml:"inbox_prefix"`
}

// DefaultConfig connects to a local server.
func DefaultConfig() Config {
	return Config{Servers: []string{"nats://127.0.0.1:4222"}, ReconnectWaitMax: 5 * time.Second}
}

// Validate returns every problem, each prefixed with key (e.g. "nats.servers").
func (c Config) Validate(key string) error {
	var errs []error
	bad := func(k, f string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", key, k, fmt.Sprintf(f, a...)))
	}
	if len(c.Servers) == 0 {
		bad("servers", "at least one server URL is required")
	}
	for i, s := range c.Servers {
		if !strings.Contains(s, "://") && strings.TrimSpace(s) == "" {
			bad(fmt.Sprintf("servers[%d]", i), "empty URL")
		}
	}
	auth := 0
	for _, set := range []bool{c.CredsFile != "", c.NKeySeedFile != "", c.User != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		bad("creds_file", "set only one of creds_file, nkey_seed_file and user")
	}
	if c.PasswordEnv != "" && c.PasswordFile != "" {
		bad("password_env", "set only one of password_env and password_file")
	}
	if (c.PasswordEnv != "" || c.PasswordFile != "") && c.User == "" {
		bad("user", "a password needs a user")
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("tls_cert_file", "tls_cert_file and tls_key_file go together")
	}
	for k, f := range map[string]string{"creds_file": c.CredsFile, "nkey_seed_file": c.NKeySeedFile, "password_file": c.PasswordFile, "tls_ca_file": c.TLSCAFile, "tls_cert_file": c.TLSCertFile, "tls_key_file": c.TLSKeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			bad(k, "%v", err)
		}
	}
	if c.InboxPrefix != "" {
		if err := validInboxPrefix(c.InboxPrefix); err != nil {
			bad("inbox_prefix", "%v", err)
		}
	}
	if c.ReconnectWaitMax < 0 {
		bad("reconnect_wait_max", "must not be negative")
	}
	return errors.Join(errs...)
}

// password resolves the password from its env var or file.
func (c Config) password() (string, error) {
	switch {
	case c.PasswordEnv != "":
		v, ok := os.LookupEnv(c.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("nats password: env var %s is not set", c.PasswordEnv)
		}
		return v, nil
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("nats password: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}
