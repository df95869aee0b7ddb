// Package alertmanager posts alerts to Prometheus Alertmanager's
// POST /api/v2/alerts. Firing alerts are re-sent every resend interval with
// endsAt = now + 4 intervals, as Prometheus does, so Alertmanager keeps them
// active; a resolve carries endsAt = the resolve time.
package alertmanager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
)

// Config is one Alertmanager notifier per URL (send to all).
type Config struct {
	URLs []string `yaml:"urls"` // e.g. http://alertmanager:9093
	// URLsEnv names an environment variable with more URLs, comma-separated
	// (MEGAWATCH_ALERTMANAGER_URLS by default); unset or empty adds none.
	URLsEnv        string        `yaml:"urls_env"`
	ResendInterval time.Duration `yaml:"resend_interval"` // default 1m
}

// DefaultURLsEnv is the variable the shipped configs read Alertmanager URLs from.
const DefaultURLsEnv = "MEGAWATCH_ALERTMANAGER_URLS"

// DefaultConfig reads its URLs from MEGAWATCH_ALERTMANAGER_URLS and
// re-sends every minute.
func DefaultConfig() Config {
	return Config{URLs: []string{}, URLsEnv: DefaultURLsEnv, ResendInterval: time.Minute}
}

// Resolve returns urls plus those of the urls_env variable, each checked.
func (c Config) Resolve(key string) ([]string, error) {
	out := append([]string(nil), c.URLs...)
	if c.URLsEnv != "" {
		for i, u := range strings.Split(os.Getenv(c.URLsEnv), ",") {
			if u = strings.TrimSpace(u); u == "" {
				continue
			}
			if err := checkURL(u); err != nil {
				return nil, fmt.Errorf("%s.urls_env: %s element %d: %w", key, c.URLsEnv, i, err)
			}
			out = append(out, u)
		}
	}
	return out, nil
}

func checkURL(u string) error {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("%q is not an http(s) URL", u)
	}
	return nil
}

// Validate returns every problem with its key (prefix, e.g. "notifiers.alertmanager").
func (c Config) Validate(key string) []error {
	var errs []error
	for i, u := range c.URLs {
		if err := checkURL(u); err != nil {
			errs = append(errs, fmt.Errorf("%s.urls[%d]: %w", key, i, err))
		}
	}
	if c.ResendInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s.resend_interval: must be positive", key))
	}
	return errs
}

// Notifier posts to one Alertmanager.
type Notifier struct {
	url    string
	resend time.Duration
	levels []string
	client *http.Client
	now    func() time.Time
}

// New returns a notifier for base URL u. levels names the domain path
// elements (site, hall, row, rack) for labels.
func New(u string, resend time.Duration, levels []string, client *http.Client) *Notifier {
	if client == nil {
		client = &http.Client{}
	}
	return &Notifier{url: strings.TrimRight(u, "/") + "/api/v2/alerts", resend: resend, levels: levels, client: client, now: time.Now}
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "alertmanager:" + n.url }

// ResendInterval implements notify.Resender.
func (n *Notifier) ResendInterval() time.Duration { return n.resend }

// postableAlert is Alertmanager's models.PostableAlert.
type postableAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt,omitzero"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Body is the JSON Alertmanager receives for alerts.
func (n *Notifier) Body(alerts []notify.Alert) ([]byte, error) {
	now := n.now()
	out := make([]postableAlert, 0, len(alerts))
	for _, a := range alerts {
		p := postableAlert{Labels: a.AllLabels(n.levels), Annotations: a.Annotations, StartsAt: a.StartsAt}
		if a.Firing() {
			p.EndsAt = now.Add(4 * n.resend)
		} else {
			p.EndsAt = a.EndsAt
			if p.EndsAt.IsZero() {
				p.EndsAt = now
			}
		}
		if !p.StartsAt.IsZero() && p.EndsAt.Before(p.StartsAt) {
			p.EndsAt = p.StartsAt
		}
		out = append(out, p)
	}
	return json.Marshal(out)
}

// Notify implements notify.Notifier.
func (n *Notifier) Notify(ctx context.Context, alerts []notify.Alert) (bool, error) {
	body, err := n.Body(alerts)
	if err != nil {
		return false, fmt.Errorf("alertmanager: encode: %w", err)
	}
	retry, err := notify.PostJSON(ctx, n.client, n.url, body, nil)
	if err != nil {
		return retry, fmt.Errorf("alertmanager: %w", err)
	}
	return false, nil
}
