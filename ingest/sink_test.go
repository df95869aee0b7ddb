package ingest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEnsureBucketV2: against an InfluxDB 2.x (as its /ping and
// /api/v2/buckets answer), --ensure-db checks that the bucket exists, with
// the token, and names the bucket when it does not.
func TestEnsureBucketV2(t *testing.T) {
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		switch r.URL.Path {
		case "/ping":
			w.Header().Set("X-Influxdb-Version", "v2.7.11")
			w.WriteHeader(http.StatusNoContent)
		case "/api/v2/buckets":
			var bs []map[string]string
			if r.URL.Query().Get("name") == "power" {
				bs = append(bs, map[string]string{"id": "0123456789abcdef", "orgID": "fedcba9876543210", "name": "power"})
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"buckets": bs})
		case "/query":
			t.Errorf("CREATE DATABASE sent to a 2.x server")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		bucket  string
		wantErr string
	}{{"power", ""}, {"missing", "bucket missing"}} {
		s, err := newInfluxSink(Target{Name: "t", URL: srv.URL, Org: "campus", Bucket: tc.bucket}, "s3cr3t", DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		err = s.ensure(ctx)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("bucket %s: %v", tc.bucket, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("bucket %s: error %v, want one naming %q", tc.bucket, err, tc.wantErr)
		}
		s.close()
	}
	for _, a := range auth {
		if a != "Token s3cr3t" {
			t.Errorf("request sent with Authorization %q", a)
		}
	}
}
