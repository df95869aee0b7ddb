package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/natsauth"
)

// runNATSAccounts writes a secured NATS deployment from the topology: the
// operator and accounts (in a memory resolver in auth.conf), one scoped
// signing key per role, the creds of every node and service, the server
// config and test TLS certificates. Running it again reuses every key.
func runNATSAccounts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("nats-accounts", stderr)
	out := fs.String("out", "/etc/nats", "output directory (keys/, creds/, tls/, auth.conf, nats-server.conf)")
	topoPath := fs.String("topology", "", "topology file: every node gets a user (default: embedded configs/topology.yaml)")
	account := fs.String("account", "MEGAWATCH", "account name")
	bucket := fs.String("kv-bucket", "MEGAWATCH_ALERTS", "alerts' state bucket (alerts.kv_bucket)")
	def := natsauth.DefaultServerOptions()
	name := fs.String("server-name", def.Name, "server_name")
	listen := fs.String("listen", def.Listen, "client listen address")
	httpAddr := fs.String("http", def.HTTP, "monitoring listen address")
	installDir := fs.String("install-dir", "", "directory the files will be installed in, for the paths in nats-server.conf (default: --out)")
	storeDir := fs.String("store-dir", def.StoreDir, "JetStream store directory")
	maxMem := fs.String("max-memory", def.MaxMemory, "JetStream max_memory_store")
	maxFile := fs.String("max-file", def.MaxFile, "JetStream max_file_store")
	tlsHosts := fs.String("tls-hosts", "localhost,127.0.0.1", "names and IPs of the server certificate, comma-separated")
	loadgen := fs.Bool("loadgen-user", false, "also issue creds/loadgen.creds, which may publish as every node (load tests on a test deployment only; a run without it revokes them)")
	revokeUsers := fs.String("revoke", "", "revoke these users' current keys for good (nodes or services, comma-separated); their creds are removed and a user still in the topology gets a new key")
	noTLS := fs.Bool("no-tls", false, "write no certificates (bring your own as tls/ca.pem, tls/server.pem, tls/server-key.pem)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	topo, err := configs.LoadTopology(*topoPath)
	if err != nil {
		return err
	}
	hosts := splitList(*tlsHosts)
	res, err := natsauth.Generate(natsauth.Options{
		Dir: *out, Topology: topo, Account: *account,
		Policy: natsauth.PolicyOptions{KVBucket: *bucket},
		Server: natsauth.ServerOptions{Name: *name, Listen: *listen, HTTP: *httpAddr, InstallDir: *installDir,
			StoreDir: *storeDir, MaxMemory: *maxMem, MaxFile: *maxFile},
		TLS:     natsauth.TLSOptions{Hosts: hosts, Skip: *noTLS},
		Loadgen: *loadgen,
		Revoke:  splitList(*revokeUsers),
	})
	if err != nil {
		return err
	}
	tlsNote := "kept"
	if res.TLSCreated {
		tlsNote = "new test CA and server certificate for " + strings.Join(hosts, ", ")
	}
	if *noTLS {
		tlsNote = "not written (--no-tls)"
	}
	fmt.Fprintf(stdout, `operator %s, account %s %s
server config  %s (includes %s)
tls            %s: %s
service creds  %s
node creds     %d under %s (%d new users, %d keys revoked)
keys           %s (seeds: keep them offline, they sign everything)

Next: nats-server -t -c %s && nats-server -c %s
`, res.Operator, *account, res.Account, res.ServerConf, filepath.Base(res.AuthConf), res.TLSDir, tlsNote,
		strings.Join(res.Services, " "), res.Nodes, filepath.Join(*out, natsauth.CredsDir, natsauth.NodesDir), res.NewUsers, res.Revoked,
		filepath.Join(*out, natsauth.KeysDir), res.ServerConf, res.ServerConf)
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
