package natsx

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"

	"github.com/nats-io/jwt/v2"
)

// InboxRoot is the first token of every megawatch reply inbox.
const InboxRoot = "_INBOX"

// UserInboxPrefix is the inbox prefix of NATS user name: "_INBOX.<name>".
// A user allowed to subscribe to "_INBOX.<name>.>" only receives the
// replies to its own requests, never another user's.
func UserInboxPrefix(name string) string { return InboxRoot + "." + name }

// UserInboxWildcard is the subscribe permission that covers name's inboxes.
func UserInboxWildcard(name string) string { return UserInboxPrefix(name) + ".>" }

// validInboxPrefix: a literal subject (no wildcards, no empty token, no
// trailing dot), as nats.CustomInboxPrefix requires.
func validInboxPrefix(p string) error {
	if strings.HasSuffix(p, ".") || strings.HasPrefix(p, ".") || strings.Contains(p, "..") {
		return fmt.Errorf("%q: empty subject token", p)
	}
	for _, tok := range strings.Split(p, ".") {
		if tok == "*" || tok == ">" {
			return fmt.Errorf("%q: wildcards are not allowed", p)
		}
		for _, r := range tok {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				return fmt.Errorf("%q: whitespace or control character", p)
			}
		}
	}
	return nil
}

// inboxPrefix resolves the connection's inbox prefix: the configured one,
// else "_INBOX.<user>" from the creds file's JWT, else "" (nats.go's
// default). The creds file is a secret: only the JWT's name is used.
func (c Config) inboxPrefix() (string, error) {
	if c.InboxPrefix != "" {
		return c.InboxPrefix, validInboxPrefix(c.InboxPrefix)
	}
	if c.CredsFile == "" {
		return "", nil
	}
	name, err := CredsUserName(c.CredsFile)
	if err != nil {
		return "", err
	}
	p := UserInboxPrefix(name)
	if err := validInboxPrefix(p); err != nil {
		return "", fmt.Errorf("nats creds_file: user name %q cannot form an inbox prefix (%v); set inbox_prefix", name, err)
	}
	return p, nil
}

// CredsUserName is the name of the user JWT in a .creds file.
func CredsUserName(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("nats creds_file: %w", err)
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return "", fmt.Errorf("nats creds_file %s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return "", fmt.Errorf("nats creds_file %s: user JWT: %w", path, err)
	}
	if uc.Name == "" {
		return "", errors.New("nats creds_file " + path + ": the user JWT has no name; set inbox_prefix")
	}
	return uc.Name, nil
}
