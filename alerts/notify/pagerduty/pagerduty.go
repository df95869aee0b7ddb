// Package pagerduty sends PagerDuty Events API v2 trigger and resolve
// events. dedup_key is "megawatch/<rule>/<domain>", so two replicas (and
// re-sent triggers) land on one incident; 429 and 5xx are retried with
// backoff by the dispatcher.
package pagerduty

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/internal/config"
)

// DefaultURL is the Events API v2 endpoint.
const DefaultURL = "https://events.pagerduty.com/v2/enqueue"

// Config of the PagerDuty notifier; it is enabled when a routing key
// source is set. routing_key_file, when set, wins over routing_key_env (the
// default env var PAGERDUTY_ROUTING_KEY need not be cleared to use a file).
type Config struct {
	RoutingKeyEnv  string `yaml:"routing_key_env"`
	RoutingKeyFile string `yaml:"routing_key_file"`
	URL            string `yaml:"url"`
}

// DefaultRoutingKeyEnv is where the shipped deployments (the Kubernetes
// Secret, the systemd EnvironmentFile) put the routing key.
const DefaultRoutingKeyEnv = "PAGERDUTY_ROUTING_KEY"

// DefaultConfig reads the routing key from $PAGERDUTY_ROUTING_KEY and
// posts to the public endpoint.
func DefaultConfig() Config { return Config{RoutingKeyEnv: DefaultRoutingKeyEnv, URL: DefaultURL} }

// Enabled reports whether a routing key source is set.
func (c Config) Enabled() bool { return c.RoutingKeyEnv != "" || c.RoutingKeyFile != "" }

// Validate returns every problem with its key.
func (c Config) Validate(key string) []error {
	var errs []error
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		errs = append(errs, fmt.Errorf("%s.url: %q is not an http(s) URL", key, c.URL))
	}
	return errs
}

// Event is an Events API v2 event.
type Event struct {
	RoutingKey  string   `json:"routing_key"`
	EventAction string   `json:"event_action"` // trigger | resolve
	DedupKey    string   `json:"dedup_key"`
	Payload     *Payload `json:"payload,omitempty"` // trigger only
	Client      string   `json:"client,omitempty"`
}

// Payload is the trigger payload.
type Payload struct {
	Summary       string         `json:"summary"`
	Source        string         `json:"source"`
	Severity      string         `json:"severity"` // critical | error | warning | info
	Timestamp     string         `json:"timestamp,omitempty"`
	Component     string         `json:"component,omitempty"`
	Group         string         `json:"group,omitempty"`
	Class         string         `json:"class,omitempty"`
	CustomDetails map[string]any `json:"custom_details,omitempty"`
}

// Notifier sends to one routing key.
type Notifier struct {
	url    string
	key    string
	client *http.Client
}

// New resolves the routing key (never logged).
func New(c Config, client *http.Client) (*Notifier, error) {
	env := c.RoutingKeyEnv
	if c.RoutingKeyFile != "" {
		env = ""
	}
	k, err := config.Secret("pagerduty routing key", env, c.RoutingKeyFile)
	if err != nil {
		return nil, err
	}
	if k == "" {
		return nil, errors.New("pagerduty routing key: set routing_key_env or routing_key_file")
	}
	if client == nil {
		client = &http.Client{}
	}
	return &Notifier{url: c.URL, key: k, client: client}, nil
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "pagerduty" }

// DedupKey is the stable incident key of (rule, domain).
func DedupKey(a notify.Alert) string { return "megawatch/" + a.Rule + "/" + a.Domain }

// Severity maps a rule severity onto PagerDuty's four.
func Severity(s string) string {
	switch strings.ToLower(s) {
	case "critical", "page", "emergency":
		return "critical"
	case "warning", "warn", "ticket":
		return "warning"
	case "info":
		return "info"
	}
	return "error"
}

// EventFor builds the event of one alert.
func (n *Notifier) EventFor(a notify.Alert) Event {
	ev := Event{RoutingKey: n.key, DedupKey: DedupKey(a), Client: "megawatch"}
	if !a.Firing() {
		ev.EventAction = "resolve"
		return ev
	}
	ev.EventAction = "trigger"
	ev.Payload = &Payload{
		Summary:   truncate(a.Summary(), 1024),
		Source:    a.Domain,
		Severity:  Severity(a.Severity),
		Timestamp: a.StartsAt.UTC().Format(time.RFC3339Nano),
		Component: a.Level,
		Group:     a.Domain,
		Class:     a.Metric,
		CustomDetails: map[string]any{
			"rule": a.Rule, "value": a.Value, "threshold": a.Threshold, "unit": a.Unit,
			"labels": a.Labels, "annotations": a.Annotations,
		},
	}
	return ev
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Notify implements notify.Notifier: one event per alert, in order.
func (n *Notifier) Notify(ctx context.Context, alerts []notify.Alert) (bool, error) {
	for _, a := range alerts {
		body, err := json.Marshal(n.EventFor(a))
		if err != nil {
			return false, fmt.Errorf("pagerduty: encode: %w", err)
		}
		if retry, err := notify.PostJSON(ctx, n.client, n.url, body, nil); err != nil {
			return retry, fmt.Errorf("pagerduty: %w", err)
		}
	}
	return false, nil
}
