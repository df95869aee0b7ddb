package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	influxhttp "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/megawatch/megawatch/internal/config"
)

// WriteError is a failed write. Retryable errors keep the batch (and its
// messages unacked); Rejected ones (400/422) mean some point is bad.
type WriteError struct {
	StatusCode int           // 0 for network errors
	Message    string        // InfluxDB's error text
	RetryAfter time.Duration // from Retry-After on 429/503
	Rejected   bool          // 400, 413, 422: split the batch
}

func (e *WriteError) Error() string {
	if e.StatusCode == 0 {
		return "influxdb write: " + e.Message
	}
	return fmt.Sprintf("influxdb write: status %d: %s", e.StatusCode, e.Message)
}

// sink is where a target's batches go.
type sink interface {
	// write sends lines (gzip-compressed when gz is set).
	write(ctx context.Context, body []byte, gz bool) error
	// compresses says whether the sink wants gzip bodies.
	compresses() bool
	ensure(ctx context.Context) error
	close() error
}

// target is a configured destination with its sink.
type target struct {
	Target
	sink sink
}

func (t *target) matches(subject string) bool {
	if len(t.Subjects) == 0 {
		return true
	}
	for _, f := range t.Subjects {
		if subjectMatches(f, subject) {
			return true
		}
	}
	return false
}

func newTarget(t Target, cfg Config) (*target, error) {
	if t.File != "" {
		f, err := os.OpenFile(t.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		return &target{Target: t, sink: &fileSink{f: f}}, nil
	}
	// An unset token env var is an empty token: InfluxDB 1.8 without auth
	// needs none; 2.x/3.x (and 1.8 with auth) answer 401, which the write
	// error then explains. A token file must exist.
	var token string
	if t.TokenFile != "" {
		var err error
		if token, err = config.Secret("target "+t.Name+" token", "", t.TokenFile); err != nil {
			return nil, err
		}
	} else if t.TokenEnv != "" {
		token = os.Getenv(t.TokenEnv)
	}
	s, err := newInfluxSink(t, token, cfg)
	if err != nil {
		return nil, err
	}
	return &target{Target: t, sink: s}, nil
}

// influxSink writes through influxdb-client-go's HTTP service to the v2
// write API, with pre-encoded line protocol (the point API costs ~5 µs per point).
type influxSink struct {
	client   influxdb2.Client
	svc      influxhttp.Service
	writeURL string
	base     string
	bucket   string
	token    string
	level    int
	// tokenHint says where the token comes from, for 401/403 answers.
	tokenHint string
}

func newInfluxSink(t Target, token string, cfg Config) (*influxSink, error) {
	hc := &http.Client{
		Timeout: cfg.WriteTimeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: cfg.Workers * 2,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	opts := influxdb2.DefaultOptions().SetHTTPClient(hc).SetLogLevel(0)
	c := influxdb2.NewClientWithOptions(strings.TrimRight(t.URL, "/"), token, opts)
	q := url.Values{"bucket": {t.Bucket}, "precision": {"ns"}}
	if t.Org != "" {
		q.Set("org", t.Org)
	}
	svc := c.HTTPService()
	return &influxSink{client: c, svc: svc, writeURL: svc.ServerAPIURL() + "write?" + q.Encode(),
		base: strings.TrimRight(t.URL, "/"), bucket: t.Bucket, token: token, level: cfg.GzipLevel, tokenHint: tokenHint(t, token)}, nil
}

func tokenHint(t Target, token string) string {
	switch {
	case token != "":
		return "the token was refused"
	case t.TokenEnv != "":
		return "no token sent: env var " + t.TokenEnv + " is not set (InfluxDB 2.x/3.x, or 1.8 with auth-enabled, need one)"
	}
	return "no token configured (set token_env or token_file)"
}

func (s *influxSink) compresses() bool { return s.level > 0 }

func (s *influxSink) write(ctx context.Context, body []byte, gz bool) error {
	herr := s.svc.DoPostRequest(ctx, s.writeURL, bytes.NewReader(body), func(req *http.Request) {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
	}, func(resp *http.Response) error {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	})
	if herr == nil {
		return nil
	}
	we := classify(herr)
	if we.StatusCode == http.StatusUnauthorized || we.StatusCode == http.StatusForbidden {
		we.Message += " (" + s.tokenHint + ")"
	}
	return we
}

// classify turns the client's error into a WriteError.
func classify(herr *influxhttp.Error) *WriteError {
	we := &WriteError{StatusCode: herr.StatusCode, RetryAfter: time.Duration(herr.RetryAfter) * time.Second}
	switch {
	case herr.StatusCode == 0:
		we.Message = herr.Error()
	case herr.Message != "":
		we.Message = herr.Message
	default:
		we.Message = herr.Error()
	}
	if herr.Header != nil && we.Message == "" {
		we.Message = herr.Header.Get("X-Influxdb-Error")
	}
	switch herr.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		we.Rejected = true
	}
	return we
}

// ensure creates the database (InfluxDB 1.x) or checks the bucket (2.x).
func (s *influxSink) ensure(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/ping", nil)
	s.auth(req)
	resp, err := s.svc.DoHTTPRequestWithResponse(req, nil)
	if err != nil {
		return fmt.Errorf("ping %s: %w", s.base, err)
	}
	resp.Body.Close()
	version := resp.Header.Get("X-Influxdb-Version")
	if strings.HasPrefix(version, "1.") {
		db, _, _ := strings.Cut(s.bucket, "/")
		form := url.Values{"q": {`CREATE DATABASE "` + strings.ReplaceAll(db, `"`, `\"`) + `"`}}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/query", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		s.auth(req)
		resp, err := s.svc.DoHTTPRequestWithResponse(req, nil)
		if err != nil {
			return fmt.Errorf("create database %s: %w", db, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
			return fmt.Errorf("create database %s: status %d: %s", db, resp.StatusCode, body)
		}
		return nil
	}
	if _, err := s.client.BucketsAPI().FindBucketByName(ctx, s.bucket); err != nil {
		return fmt.Errorf("bucket %s: %w", s.bucket, err)
	}
	return nil
}

func (s *influxSink) auth(req *http.Request) {
	if s.token != "" {
		req.Header.Set("Authorization", "Token "+s.token)
	}
}

func (s *influxSink) close() error { s.client.Close(); return nil }

// fileSink appends line protocol to a file (the demo without influxd).
type fileSink struct {
	mu sync.Mutex
	f  *os.File
}

func (s *fileSink) compresses() bool { return false }

func (s *fileSink) write(_ context.Context, body []byte, gz bool) error {
	if gz {
		return errors.New("file target: gzip body")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.Write(body); err != nil {
		return &WriteError{Message: err.Error()}
	}
	return nil
}

func (s *fileSink) ensure(context.Context) error { return nil }

func (s *fileSink) close() error { return s.f.Close() }
