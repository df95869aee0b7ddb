package alerts

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/notify/alertmanager"
	"github.com/megawatch/megawatch/alerts/notify/lognotify"
	"github.com/megawatch/megawatch/alerts/notify/natsalert"
	"github.com/megawatch/megawatch/alerts/notify/pagerduty"
	"github.com/megawatch/megawatch/alerts/notify/webhook"
)

// ErrNoPaging is returned by CheckPaging when no notifier reaches a human
// and the config does not say notifiers.log_only: true.
var ErrNoPaging = errors.New("no paging notifier: set notifiers.alertmanager.urls or $MEGAWATCH_ALERTMANAGER_URLS " +
	"(notifiers.alertmanager.urls_env), a PagerDuty routing key ($PAGERDUTY_ROUTING_KEY, notifiers.pagerduty.routing_key_env/_file) " +
	"or notifiers.webhook.url; or set notifiers.log_only: true to run without paging")

// notifiers builds the configured notifiers; secrets are resolved here. It
// also returns the names of the paging ones (those that reach a person:
// Alertmanager, PagerDuty, webhook).
func (e *Engine) notifiers() ([]notify.Notifier, []string, error) {
	c := e.cfg.Notifiers
	client := &http.Client{Timeout: c.Dispatch.Timeout + time.Second}
	var out []notify.Notifier
	var paging []string
	urls, err := c.Alertmanager.Resolve("notifiers.alertmanager")
	if err != nil {
		return nil, nil, err
	}
	for _, u := range urls {
		out = append(out, alertmanager.New(u, c.Alertmanager.ResendInterval, e.topo.Levels(), client))
		paging = append(paging, "alertmanager:"+u)
	}
	pd := c.PagerDuty
	if pdKeyAbsent(pd) {
		// The key is injected by the deployment (a Kubernetes Secret, an
		// EnvironmentFile); where it is not, PagerDuty is off.
		e.logger.Warn("pagerduty off: no routing key (variable unset or key file empty)",
			"notifiers.pagerduty.routing_key_env", pd.RoutingKeyEnv, "notifiers.pagerduty.routing_key_file", pd.RoutingKeyFile)
	} else if pd.Enabled() {
		n, err := pagerduty.New(pd, client)
		if err != nil {
			return nil, nil, fmt.Errorf("notifiers.pagerduty: %w", err)
		}
		out = append(out, n)
		paging = append(paging, "pagerduty")
	}
	if c.Webhook.URL != "" {
		n, err := webhook.New(c.Webhook, client)
		if err != nil {
			return nil, nil, fmt.Errorf("notifiers.webhook: %w", err)
		}
		out = append(out, n)
		paging = append(paging, "webhook")
	}
	if c.NATS.Enabled && e.js != nil {
		out = append(out, natsalert.New(e.js))
	}
	if c.Log.Enabled {
		out = append(out, lognotify.New(e.logger))
	}
	if len(paging) == 0 {
		e.logger.Warn("NO PAGING NOTIFIER: alerts go to the log and NATS only", "notifiers.log_only", c.LogOnly)
	} else {
		e.logger.Info("paging notifiers", "notifiers", strings.Join(paging, ","))
	}
	if e.reg != nil {
		e.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "megawatch_alerts_paging_notifiers",
			Help: "Notifiers that reach a person (Alertmanager, PagerDuty, webhook); 0 means alerts page nobody (notifiers.log_only)."},
			func() float64 { return float64(len(paging)) }))
	}
	return out, paging, nil
}

// Paging names the notifiers that reach a person; empty when none does.
func (e *Engine) Paging() []string { return e.paging }

// pdKeyAbsent reports whether PagerDuty's routing key source is there but
// empty: an env var that is not set, or a file that is empty (systemd's
// SetCredential= fallback when the key file is not installed). PagerDuty
// is then off. A key file that does not exist is an error, not absence.
func pdKeyAbsent(pd pagerduty.Config) bool {
	if pd.RoutingKeyFile != "" {
		b, err := os.ReadFile(pd.RoutingKeyFile)
		return err == nil && strings.TrimSpace(string(b)) == ""
	}
	return pd.RoutingKeyEnv != "" && os.Getenv(pd.RoutingKeyEnv) == ""
}

// CheckPaging resolves which notifiers would page (reading the env vars
// they name) and refuses a config that pages nobody unless it says
// notifiers.log_only: true. `megawatch alerts` calls it before connecting.
func (c NotifiersConfig) CheckPaging() ([]string, error) {
	var paging []string
	urls, err := c.Alertmanager.Resolve("notifiers.alertmanager")
	if err != nil {
		return nil, err
	}
	for _, u := range urls {
		paging = append(paging, "alertmanager:"+u)
	}
	if c.PagerDuty.Enabled() && !pdKeyAbsent(c.PagerDuty) {
		paging = append(paging, "pagerduty")
	}
	if c.Webhook.URL != "" {
		paging = append(paging, "webhook")
	}
	if len(paging) == 0 && !c.LogOnly {
		return nil, ErrNoPaging
	}
	return paging, nil
}

// readyDetail is the paging line /readyz prints after "ready".
func (e *Engine) readyDetail() string {
	if len(e.paging) == 0 {
		return "paging: NONE (notifiers.log_only: alerts reach the log and NATS only)"
	}
	return "paging: " + strings.Join(e.paging, ", ")
}
