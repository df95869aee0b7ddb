package grafana_test

import (
	"strings"
	"testing"

	"github.com/megawatch/megawatch/ingest"
)

// shippedIngestConfig is the ingest config as shipped, configs/ingest.yaml
// (which a test in ingest keeps equal to ingest.DefaultConfig).
const shippedIngestConfig = "../ingest.yaml"

// shippedTarget is the first target of configs/ingest.yaml, with its
// measurement → bucket (db/rp) mapping and retention policies untouched,
// only pointed at url. The tests fill influxd through it, so the
// dashboards are checked against where the shipped ingest writes.
func shippedTarget(t *testing.T, url string) ingest.Target {
	t.Helper()
	cfg, err := ingest.LoadConfig(shippedIngestConfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) == 0 || cfg.Targets[0].URL == "" {
		t.Fatalf("%s: no InfluxDB target", shippedIngestConfig)
	}
	tg := cfg.Targets[0]
	tg.URL = url
	tg.Subjects = nil
	// The test's influxd runs without auth.
	tg.TokenEnv, tg.TokenFile = "", ""
	return tg
}

// shippedDB is the database of configs/ingest.yaml's target.
func shippedDB(t *testing.T) string {
	t.Helper()
	dbName, _, _ := strings.Cut(shippedTarget(t, "http://unused").Bucket, "/")
	return dbName
}

// shippedRP is the retention policy the target writes measurement m to.
func shippedRP(t *testing.T, tg ingest.Target, m string) string {
	t.Helper()
	b := tg.Bucket
	if mb, ok := tg.Measurements[m]; ok && mb != "" {
		b = mb
	}
	_, rp, ok := strings.Cut(b, "/")
	if !ok || rp == "" {
		t.Fatalf("%s: bucket %q of measurement %s names no retention policy (want db/rp on InfluxDB 1.8)", shippedIngestConfig, b, m)
	}
	return rp
}

// shippedFrom is the FROM target `"rp"."m"` for measurement m.
func shippedFrom(t *testing.T, tg ingest.Target, m string) string {
	t.Helper()
	return `"` + shippedRP(t, tg, m) + `"."` + m + `"`
}
