package natsauth

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

// ServerOptions are the deployment-specific values of nats-server.conf.
// With the defaults and InstallDir /etc/nats, ServerConf is exactly
// configs/nats/nats-server.conf.
type ServerOptions struct {
	Name       string // server_name, default megawatch-nats-1
	Listen     string // client port, default 0.0.0.0:4222
	HTTP       string // monitoring, default 127.0.0.1:8222
	InstallDir string // where the files will live (TLS paths); default the output dir
	StoreDir   string // JetStream store, default /var/lib/nats
	MaxMemory  string // max_memory_store, default 8GB
	MaxFile    string // max_file_store, default 4TB
}

// DefaultServerOptions are the shipped config's values.
func DefaultServerOptions() ServerOptions {
	return ServerOptions{Name: "megawatch-nats-1", Listen: "0.0.0.0:4222", HTTP: "127.0.0.1:8222",
		InstallDir: "/etc/nats", StoreDir: "/var/lib/nats", MaxMemory: "8GB", MaxFile: "4TB"}
}

func (s ServerOptions) withDefaults(dir string) ServerOptions {
	d := DefaultServerOptions()
	if s.InstallDir == "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		s.InstallDir = dir
	}
	for _, f := range []struct {
		v   *string
		def string
	}{{&s.Name, d.Name}, {&s.Listen, d.Listen}, {&s.HTTP, d.HTTP},
		{&s.StoreDir, d.StoreDir}, {&s.MaxMemory, d.MaxMemory}, {&s.MaxFile, d.MaxFile}} {
		if *f.v == "" {
			*f.v = f.def
		}
	}
	return s
}

var confTmpl = template.Must(template.New("nats-server.conf").Parse(`# megawatch NATS server (nats-server 2.10+): JetStream, TLS, JWT accounts.
#
# Written by ` + "`megawatch nats-accounts`" + ` together with auth.conf (the operator
# and the accounts, preloaded in a memory resolver), tls/ and the creds of
# every user. docs/nats.md explains every step; the security model is:
#
#   account MEGAWATCH has one scoped signing key per role; the key's
#   template is the role's permissions, so a user JWT carries only a name
#   (and, for nodes, tags), and the account JWT is the whole policy.
#   - node (one user per GPU node, name = node, tags site/hall/row/rack):
#       pub  megawatch.v1.power.{{"{{"}}tag(site)}}.{{"{{"}}tag(hall)}}.{{"{{"}}tag(row)}}.{{"{{"}}tag(rack)}}.{{"{{"}}name()}}
#       sub  _INBOX.{{"{{"}}name()}}.>       (its own JetStream acks)
#     so a node can publish only its own reports and receive nothing but
#     the replies to its own publishes.
#   - ingest, alerts, tap: what each service needs and no more (no stream
#     delete, no _INBOX.>), see docs/nats.md.
# Templated permissions exist only for JWT users of scoped signing keys,
# not for users listed in a config file; that is why auth is JWT-based.
# Tests: internal/natsauth and cmd/megawatch (TestNATSAccounts*) run the real
# nats-server on this file as the command writes it.

server_name: {{.Name}}
listen: {{.Listen}}
# Monitoring (/varz, /jsz, /connz); keep it off the public network.
http: {{.HTTP}}

max_payload: 1MB
max_pending: 64MB
write_deadline: "10s"
ping_interval: "20s"

tls {
  cert_file: "{{.InstallDir}}/tls/server.pem"
  key_file:  "{{.InstallDir}}/tls/server-key.pem"
  ca_file:   "{{.InstallDir}}/tls/ca.pem"
  # Clients authenticate with their user JWT (creds file); set verify: true
  # to also require a client certificate signed by ca_file.
  verify: false
  timeout: 2
  min_version: "1.3"
}

jetstream {
  store_dir: "{{.StoreDir}}"
  # At 1 GW: ~69k reports/s × ~350 B ≈ 24 MB/s into MEGAWATCH_POWER; 24 h
  # retention (natsx.StreamsConfig.max_age) ≈ 2 TB per replica.
  max_memory_store: {{.MaxMemory}}
  max_file_store: {{.MaxFile}}
}

# The operator, system account, memory resolver and preloaded account
# JWTs, written by ` + "`megawatch nats-accounts`" + ` next to this file.
include "auth.conf"
`))

// ServerConf renders nats-server.conf.
func ServerConf(s ServerOptions) ([]byte, error) {
	for k, v := range map[string]string{"name": s.Name, "listen": s.Listen, "http": s.HTTP, "install dir": s.InstallDir, "store dir": s.StoreDir} {
		if strings.ContainsAny(v, "\"\n") {
			return nil, fmt.Errorf("natsauth: server %s %q: quotes and newlines are not allowed", k, v)
		}
	}
	var b bytes.Buffer
	if err := confTmpl.Execute(&b, s); err != nil {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	return b.Bytes(), nil
}

// authConf is the operator and the memory resolver with every account
// preloaded: a server started on it needs no push step.
func authConf(opJWT string, names, jwts map[string]string, sysPub string) string {
	var b strings.Builder
	b.WriteString("# Written by `megawatch nats-accounts`; re-run it rather than editing.\n")
	b.WriteString("# A memory resolver: the accounts below are all there is. After a new\n")
	b.WriteString("# run, `nats-server --signal reload` (or a restart) picks them up.\n")
	fmt.Fprintf(&b, "operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n", opJWT, sysPub)
	keys := make([]string, 0, len(names))
	for n := range names {
		keys = append(keys, n)
	}
	sort.Strings(keys)
	for _, n := range keys {
		pub := names[n]
		fmt.Fprintf(&b, "  # %s\n  %s: %q\n", n, pub, jwts[pub])
	}
	b.WriteString("}\n")
	return b.String()
}
