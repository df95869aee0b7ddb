// Package webhook posts alerts as JSON to any URL, optionally signed with
// HMAC-SHA256 of the body in the X-Megawatch-Signature header
// ("sha256=<hex>"), keyed by a secret from an env var or a file.
package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/internal/config"
)

// SignatureHeader carries "sha256=" + hex(HMAC-SHA256(secret, body)).
const SignatureHeader = "X-Megawatch-Signature"

// Config of the webhook notifier; an empty URL disables it.
type Config struct {
	URL        string `yaml:"url"`
	SecretEnv  string `yaml:"secret_env"`
	SecretFile string `yaml:"secret_file"`
}

// Validate returns every problem with its key.
func (c Config) Validate(key string) []error {
	var errs []error
	if c.URL != "" && !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		errs = append(errs, fmt.Errorf("%s.url: %q is not an http(s) URL", key, c.URL))
	}
	if c.SecretEnv != "" && c.SecretFile != "" {
		errs = append(errs, fmt.Errorf("%s.secret_env: set only one of secret_env and secret_file", key))
	}
	return errs
}

// Payload is the JSON body.
type Payload struct {
	Version string         `json:"version"` // "1"
	Source  string         `json:"source"`  // "megawatch"
	Alerts  []notify.Alert `json:"alerts"`
}

// Notifier posts to one URL.
type Notifier struct {
	url    string
	secret []byte
	client *http.Client
}

// New resolves the secret (never logged) and returns the notifier.
func New(c Config, client *http.Client) (*Notifier, error) {
	s, err := config.Secret("webhook secret", c.SecretEnv, c.SecretFile)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = &http.Client{}
	}
	return &Notifier{url: c.URL, secret: []byte(s), client: client}, nil
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "webhook" }

// Sign returns the signature header value of body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Notify implements notify.Notifier.
func (n *Notifier) Notify(ctx context.Context, alerts []notify.Alert) (bool, error) {
	body, err := json.Marshal(Payload{Version: "1", Source: "megawatch", Alerts: alerts})
	if err != nil {
		return false, fmt.Errorf("webhook: encode: %w", err)
	}
	var h http.Header
	if len(n.secret) > 0 {
		h = http.Header{SignatureHeader: {Sign(n.secret, body)}}
	}
	retry, err := notify.PostJSON(ctx, n.client, n.url, body, h)
	if err != nil {
		return retry, fmt.Errorf("webhook: %w", err)
	}
	return false, nil
}
