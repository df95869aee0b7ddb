package natsauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// RevokedFile lists revoked user keys, one "<public key> <unix time> <name>"
// a line; every run puts them all in the account JWT.
const RevokedFile = "revoked.txt"

type revocation struct {
	pub  string
	at   time.Time
	name string
}

// revoke adds the users' current keys to keys/revoked.txt and removes
// their creds files: the next account JWT rejects those keys, and a user
// still in the topology is issued a new key.
func revoke(dir string, names []string, topoNode func(string) bool) ([]revocation, error) {
	path := filepath.Join(dir, KeysDir, RevokedFile)
	revs, err := loadRevocations(path)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return revs, nil
	}
	var buf bytes.Buffer
	for _, r := range revs {
		fmt.Fprintf(&buf, "%s %d %s\n", r.pub, r.at.Unix(), r.name)
	}
	var creds []string
	for _, n := range names {
		p := ServiceCredsPath(dir, n)
		if topoNode(n) {
			p = NodeCredsPath(dir, n)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("natsauth: revoke %s: %w", n, err)
		}
		kp, err := jwt.ParseDecoratedUserNKey(b)
		if err != nil {
			return nil, fmt.Errorf("natsauth: revoke %s: %s: %w", n, p, err)
		}
		pub, _ := kp.PublicKey()
		r := revocation{pub: pub, at: time.Now().Add(time.Second).Truncate(time.Second), name: n}
		revs = append(revs, r)
		fmt.Fprintf(&buf, "%s %d %s\n", r.pub, r.at.Unix(), r.name)
		creds = append(creds, p)
	}
	if err := writeFile(path, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	for _, p := range creds {
		if err := os.Remove(p); err != nil {
			return nil, fmt.Errorf("natsauth: %w", err)
		}
	}
	return revs, nil
}

func loadRevocations(path string) ([]revocation, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("natsauth: %w", err)
	}
	var out []revocation
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 || !nkeys.IsValidPublicUserKey(f[0]) {
			return nil, fmt.Errorf("natsauth: %s:%d: want \"<user public key> <unix time> <name>\"", path, line)
		}
		ts, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("natsauth: %s:%d: %w", path, line, err)
		}
		name := ""
		if len(f) > 2 {
			name = f[2]
		}
		out = append(out, revocation{pub: f[0], at: time.Unix(ts, 0), name: name})
	}
	return out, nil
}
