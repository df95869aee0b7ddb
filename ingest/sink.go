package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
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
	Lines      []LineError   // InfluxDB 3.x: the lines it refused (the rest is stored)
}

// LineError is one refused line of a 3.x partial write (1-based line number).
type LineError struct {
	Line    int
	Message string
}

func (e *WriteError) Error() string {
	if e.StatusCode == 0 {
		return "influxdb write: " + e.Message
	}
	return fmt.Sprintf("influxdb write: status %d: %s", e.StatusCode, e.Message)
}

// sink is where a target's batches go.
type sink interface {
	// write sends lines of one lane (bucket; gzip-compressed when gz is set).
	write(ctx context.Context, lane int, body []byte, gz bool) error
	// compresses says whether the sink wants gzip bodies.
	compresses() bool
	ensure(ctx context.Context) error
	close() error
}

// target is a configured destination with its sink.
type target struct {
	Target
	sink      sink
	conflicts conflictSet
	// shardDur caches the shard duration of each lane's retention policy
	// as InfluxDB reports it (1.x), for conflicts outside the config.
	shardMu  sync.Mutex
	shardDur map[string]time.Duration
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
	client    influxdb2.Client
	svc       influxhttp.Service
	hc        *http.Client
	writeURLs []string // per lane
	base      string
	bucket    string
	token     string
	level     int
	// tokenHint says where the token comes from, for 401/403 answers.
	tokenHint string
	t         Target
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
	svc := c.HTTPService()
	var urls []string
	for _, bucket := range t.Lanes() {
		q := url.Values{"bucket": {bucket}, "precision": {"ns"}}
		if t.Org != "" {
			q.Set("org", t.Org)
		}
		urls = append(urls, svc.ServerAPIURL()+"write?"+q.Encode())
	}
	return &influxSink{client: c, svc: svc, hc: hc, writeURLs: urls,
		base: strings.TrimRight(t.URL, "/"), bucket: t.Bucket, token: token, level: cfg.GzipLevel, tokenHint: tokenHint(t, token), t: t}, nil
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

func (s *influxSink) write(ctx context.Context, lane int, body []byte, gz bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.writeURLs[lane], bytes.NewReader(body))
	if err != nil {
		return &WriteError{Message: err.Error()}
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	s.auth(req)
	resp, err := s.hc.Do(req)
	if err != nil {
		return &WriteError{Message: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	we := classifyResponse(resp)
	if we.StatusCode == http.StatusUnauthorized || we.StatusCode == http.StatusForbidden {
		we.Message += " (" + s.tokenHint + ")"
	}
	return we
}

// classifyResponse turns a non-2xx write answer into a WriteError: the
// message from the JSON body (1.x "error", 2.x "message", 3.x "error" plus
// per-line "data"), else X-Influxdb-Error, else the body text.
func classifyResponse(resp *http.Response) *WriteError {
	we := &WriteError{StatusCode: resp.StatusCode}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			we.RetryAfter = time.Duration(n) * time.Second
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	_, _ = io.Copy(io.Discard, resp.Body)
	var js struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Error   string `json:"error"`
		Data    []struct {
			Line  int    `json:"line_number"`
			Error string `json:"error_message"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &js) == nil {
		we.Message = js.Message
		if we.Message == "" {
			we.Message = js.Error
		}
		for _, d := range js.Data {
			we.Lines = append(we.Lines, LineError{Line: d.Line, Message: d.Error})
		}
	}
	if we.Message == "" {
		we.Message = resp.Header.Get("X-Influxdb-Error")
	}
	if we.Message == "" {
		we.Message = strings.TrimSpace(string(body))
	}
	if we.Message == "" {
		we.Message = resp.Status
	}
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		we.Rejected = true
	}
	return we
}

// ensure creates the database and the retention policies (InfluxDB 1.x:
// altered to match when they exist) and checks that every lane's retention
// policy exists; on 2.x/3.x it checks that every lane's bucket exists.
func (s *influxSink) ensure(ctx context.Context) error {
	version, err := s.version(ctx)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(version, "1.") {
		for _, b := range s.t.Lanes() {
			if _, err := s.client.BucketsAPI().FindBucketByName(ctx, b); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		return nil
	}
	db, _, _ := strings.Cut(s.bucket, "/")
	if _, err := s.influxQL(ctx, http.MethodPost, "", "CREATE DATABASE "+quoteIdent(db)); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	for _, p := range s.t.RetentionPolicies {
		spec := " ON " + quoteIdent(db) + " DURATION " + influxDuration(p.Duration) + " REPLICATION 1"
		if p.ShardDuration > 0 {
			spec += " SHARD DURATION " + influxDuration(p.ShardDuration)
		}
		_, err := s.influxQL(ctx, http.MethodPost, "", "CREATE RETENTION POLICY "+quoteIdent(p.Name)+spec)
		if err != nil && strings.Contains(err.Error(), "already exists") {
			_, err = s.influxQL(ctx, http.MethodPost, "", "ALTER RETENTION POLICY "+quoteIdent(p.Name)+spec)
		}
		if err != nil {
			return fmt.Errorf("retention policy %s on %s: %w", p.Name, db, err)
		}
	}
	have := map[string]bool{}
	rows, err := s.influxQL(ctx, http.MethodGet, "", "SHOW RETENTION POLICIES ON "+quoteIdent(db))
	if err != nil {
		return err
	}
	for _, r := range rows {
		if len(r) > 0 {
			have[db+"/"+r[0]] = true
		}
	}
	for _, b := range s.t.Lanes() {
		if _, rp, ok := strings.Cut(b, "/"); ok && !have[b] {
			return fmt.Errorf("bucket %s: retention policy %s does not exist on database %s (list it under retention_policies to have --ensure-db create it)", b, rp, db)
		}
	}
	return nil
}

// version pings the server and returns its X-Influxdb-Version.
func (s *influxSink) version(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/ping", nil)
	s.auth(req)
	resp, err := s.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("ping %s: %w", s.base, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.Header.Get("X-Influxdb-Version"), nil
}

// influxDuration writes d as an InfluxQL duration literal (0 = INF).
func influxDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "INF"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
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

func (s *fileSink) write(_ context.Context, _ int, body []byte, gz bool) error {
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
