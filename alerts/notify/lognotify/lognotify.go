// Package lognotify writes alert state changes to the process log.
package lognotify

import (
	"context"
	"log/slog"

	"github.com/megawatch/megawatch/alerts/notify"
)

// Notifier logs each alert; it never fails.
type Notifier struct{ logger *slog.Logger }

// New logs to logger.
func New(logger *slog.Logger) *Notifier { return &Notifier{logger: logger} }

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "log" }

// Notify implements notify.Notifier.
func (n *Notifier) Notify(_ context.Context, alerts []notify.Alert) (bool, error) {
	for _, a := range alerts {
		lvl := slog.LevelWarn
		if !a.Firing() {
			lvl = slog.LevelInfo
		}
		n.logger.Log(context.Background(), lvl, "alert", "rule", a.Rule, "state", a.State, "severity", a.Severity,
			"level", a.Level, "domain", a.Domain, "value", a.Value, "threshold", a.Threshold, "unit", a.Unit,
			"summary", a.Summary(), "fingerprint", a.Fingerprint)
	}
	return false, nil
}
