package alerts

import (
	"fmt"
	"net/http"
	"time"

	"github.com/megawatch/megawatch/alerts/notify"
	"github.com/megawatch/megawatch/alerts/notify/alertmanager"
	"github.com/megawatch/megawatch/alerts/notify/lognotify"
	"github.com/megawatch/megawatch/alerts/notify/natsalert"
	"github.com/megawatch/megawatch/alerts/notify/pagerduty"
	"github.com/megawatch/megawatch/alerts/notify/webhook"
)

// notifiers builds the configured notifiers; secrets are resolved here.
func (e *Engine) notifiers() ([]notify.Notifier, error) {
	c := e.cfg.Notifiers
	client := &http.Client{Timeout: c.Dispatch.Timeout + time.Second}
	var out []notify.Notifier
	for _, u := range c.Alertmanager.URLs {
		out = append(out, alertmanager.New(u, c.Alertmanager.ResendInterval, e.topo.Levels(), client))
	}
	if c.PagerDuty.Enabled() {
		n, err := pagerduty.New(c.PagerDuty, client)
		if err != nil {
			return nil, fmt.Errorf("notifiers.pagerduty: %w", err)
		}
		out = append(out, n)
	}
	if c.Webhook.URL != "" {
		n, err := webhook.New(c.Webhook, client)
		if err != nil {
			return nil, fmt.Errorf("notifiers.webhook: %w", err)
		}
		out = append(out, n)
	}
	if c.NATS.Enabled && e.js != nil {
		out = append(out, natsalert.New(e.js))
	}
	if c.Log.Enabled {
		out = append(out, lognotify.New(e.logger))
	}
	return out, nil
}
