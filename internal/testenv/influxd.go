package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/influxconf"
)

// Influxd is an influxd 1.8 process on 127.0.0.1 with its data in a temp dir.
type Influxd struct {
	*Proc
	URL string // http://127.0.0.1:<port>
	Dir string
}

// StartInfluxd runs influxd 1.8.10 with a minimal config and waits for /ping.
func StartInfluxd(t testing.TB) *Influxd {
	t.Helper()
	Short(t)
	bin := Binary(t, "influxd")
	dir := t.TempDir()
	port := FreePort(t)
	rpcPort := FreePort(t)
	conf := influxconf.Local(dir, port, rpcPort)
	cf := filepath.Join(dir, "influxd.conf")
	writeFile(t, cf, conf)
	d := &Influxd{Proc: StartProc(t, "influxd", bin, "-config", cf), URL: fmt.Sprintf("http://127.0.0.1:%d", port), Dir: dir}
	d.WaitReady(t)
	return d
}

// WaitReady waits until /ping answers 204.
func (d *Influxd) WaitReady(t testing.TB) {
	t.Helper()
	d.WaitHTTP(d.URL+"/ping", http.StatusNoContent, 60*time.Second)
}

// Restart starts the killed influxd again on the same port and data.
func (d *Influxd) Restart(t testing.TB) {
	t.Helper()
	if err := d.Start(); err != nil {
		t.Fatalf("restart influxd: %v", err)
	}
	d.WaitReady(t)
}

// Exec runs an InfluxQL statement (POST /query) and fails the test on error.
func (d *Influxd) Exec(t testing.TB, db, q string) {
	t.Helper()
	if _, err := d.query(http.MethodPost, db, q); err != nil {
		t.Fatalf("influxql %q: %v", q, err)
	}
}

// CreateDB creates a database.
func (d *Influxd) CreateDB(t testing.TB, db string) { d.Exec(t, "", "CREATE DATABASE "+quoteIdent(db)) }

// Series is one series of an InfluxQL result.
type Series struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// Query runs an InfluxQL query (epoch=ns) and returns the series of the first statement.
func (d *Influxd) Query(t testing.TB, db, q string) []Series {
	t.Helper()
	s, err := d.QueryErr(db, q)
	if err != nil {
		t.Fatalf("influxql %q: %v", q, err)
	}
	return s
}

// QueryErr is Query returning the error.
func (d *Influxd) QueryErr(db, q string) ([]Series, error) { return d.query(http.MethodGet, db, q) }

func (d *Influxd) query(method, db, q string) ([]Series, error) {
	v := url.Values{"q": {q}, "epoch": {"ns"}}
	if db != "" {
		v.Set("db", db)
	}
	var resp *http.Response
	var err error
	if method == http.MethodPost {
		resp, err = http.PostForm(d.URL+"/query", v)
	} else {
		resp, err = http.Get(d.URL + "/query?" + v.Encode())
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	var out struct {
		Results []struct {
			Series []Series `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", body, err)
	}
	if out.Error != "" {
		return nil, fmt.Errorf("%s", out.Error)
	}
	if len(out.Results) == 0 {
		return nil, nil
	}
	if out.Results[0].Error != "" {
		return nil, fmt.Errorf("%s", out.Results[0].Error)
	}
	return out.Results[0].Series, nil
}

// Count returns the single number of `SELECT count(field) FROM ...` style queries
// (0 when there is no series).
func (d *Influxd) Count(t testing.TB, db, q string) int64 {
	t.Helper()
	s := d.Query(t, db, q)
	if len(s) == 0 || len(s[0].Values) == 0 {
		return 0
	}
	row := s[0].Values[0]
	n, _ := row[len(row)-1].(json.Number).Int64()
	return n
}

// PointsWrittenOK reads httpd's pointsWrittenOK from /debug/vars (cheap,
// unlike count() queries, which cost influxd real CPU).
func (d *Influxd) PointsWrittenOK() (int64, error) {
	resp, err := http.Get(d.URL + "/debug/vars")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var vars map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&vars); err != nil {
		return 0, err
	}
	var total int64
	for k, raw := range vars {
		if !strings.HasPrefix(k, "httpd") {
			continue
		}
		var w struct {
			Values map[string]json.Number `json:"values"`
		}
		if err := json.Unmarshal(raw, &w); err != nil {
			return 0, err
		}
		n, _ := w.Values["pointsWrittenOK"].Int64()
		total += n
	}
	return total, nil
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
