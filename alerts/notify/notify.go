// Package notify delivers alert state changes to on-call systems. Each
// integration lives in its own subpackage (alertmanager, pagerduty, webhook,
// natsalert, lognotify) and implements Notifier; the Dispatcher gives every
// notifier its own bounded queue and retry loop so that a slow or failing
// receiver never blocks rule evaluation.
package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"time"
)

// States an Alert is sent in.
const (
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Alert is one (rule, domain) at a state change, or re-sent while firing.
type Alert struct {
	Rule        string            `json:"rule"`
	Severity    string            `json:"severity"`
	Level       string            `json:"level"`
	Domain      string            `json:"domain"` // path joined by "/", e.g. "dc1/h1"
	Path        []string          `json:"path"`
	State       string            `json:"state"` // firing | resolved
	Metric      string            `json:"metric"`
	Unit        string            `json:"unit"` // MW, MW/s, ratio, C, count
	Value       float64           `json:"value"`
	Threshold   float64           `json:"threshold"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"starts_at"`
	EndsAt      time.Time         `json:"ends_at,omitzero"` // set when resolved
	At          time.Time         `json:"at"`               // time of the state change (window end)
	// Fingerprint is the stable identity of (rule, domain): PagerDuty's
	// dedup_key and the KV key. Two replicas compute the same one.
	Fingerprint string `json:"fingerprint"`
}

// Firing reports whether the alert is firing.
func (a Alert) Firing() bool { return a.State == StateFiring }

// Summary is the summary annotation, or a generated one.
func (a Alert) Summary() string {
	if s := a.Annotations["summary"]; s != "" {
		return s
	}
	return fmt.Sprintf("%s %s on %s %s: %.3g %s (threshold %.3g %s)", a.Rule, a.State, a.Level, a.Domain, a.Value, a.Unit, a.Threshold, a.Unit)
}

// AllLabels is the identity label set: alertname, severity, level, domain,
// one label per path level (site, hall, ...), then the rule's own labels.
// levels names the path elements; extra path elements are ignored.
func (a Alert) AllLabels(levels []string) map[string]string {
	l := make(map[string]string, 4+len(a.Path)+len(a.Labels))
	maps.Copy(l, a.Labels)
	for i, p := range a.Path {
		if i < len(levels) {
			l[levels[i]] = p
		}
	}
	l["alertname"] = a.Rule
	l["severity"] = a.Severity
	l["level"] = a.Level
	l["domain"] = a.Domain
	return l
}

// Notifier delivers alerts. retry says whether a failure is worth retrying
// (network errors, 5xx, 429) or permanent (4xx, bad config).
type Notifier interface {
	Name() string
	Notify(ctx context.Context, alerts []Alert) (retry bool, err error)
}

// Resender is a Notifier that wants every firing (and recently resolved)
// alert re-sent at an interval, as Alertmanager expects of its clients.
type Resender interface {
	Notifier
	ResendInterval() time.Duration
}

// RetryAfterError asks the dispatcher to wait at least After before retrying
// (HTTP 429 with Retry-After).
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.After)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// StatusError is a non-2xx HTTP answer.
type StatusError struct {
	URL  string
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("POST %s: HTTP %d: %s", e.URL, e.Code, e.Body)
}

// PostJSON posts body as JSON to url (with header's extra fields) and
// classifies the answer as HTTPResult does; transport errors are retryable.
func PostJSON(ctx context.Context, client *http.Client, url string, body []byte, header http.Header) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return HTTPResult(url, resp, rb)
}

// HTTPResult classifies an HTTP answer: nil for 2xx; retryable for 429 and
// 5xx (429 with Retry-After becomes a RetryAfterError); permanent otherwise.
func HTTPResult(url string, resp *http.Response, body []byte) (retry bool, err error) {
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	if len(body) > 512 {
		body = body[:512]
	}
	se := &StatusError{URL: url, Code: resp.StatusCode, Body: string(body)}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		after := time.Second
		if s, e := strconv.Atoi(resp.Header.Get("Retry-After")); e == nil && s >= 0 {
			after = time.Duration(s) * time.Second
		}
		return true, &RetryAfterError{After: after, Err: se}
	case resp.StatusCode >= 500:
		return true, se
	}
	return false, se
}

// retryAfter returns the wait a RetryAfterError asks for, or 0.
func retryAfter(err error) time.Duration {
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		return ra.After
	}
	return 0
}
