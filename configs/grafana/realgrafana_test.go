package grafana_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/megawatch/megawatch/internal/testenv"
)

// The name the dashboards' datasource variable has; every query refers to
// ${dsVar}.
const dsVar = "datasource"

// startProvisionedGrafana starts the real Grafana 9.3.2 with
// configs/grafana/provisioning as shipped: the datasource URL and token
// come from $MEGAWATCH_INFLUX_URL and $MEGAWATCH_INFLUX_TOKEN (Grafana
// expands them), and only the dashboard provider's path, an absolute
// install path, is pointed at configs/grafana/dashboards.
func startProvisionedGrafana(t *testing.T, influxURL string) *testenv.Grafana {
	t.Helper()
	t.Setenv("MEGAWATCH_INFLUX_URL", influxURL)
	t.Setenv("MEGAWATCH_INFLUX_TOKEN", "")
	prov := t.TempDir()
	copyFile := func(rel string, replace map[string]string) {
		b, err := os.ReadFile(filepath.Join("provisioning", rel))
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for old, repl := range replace {
			if !strings.Contains(s, old) {
				t.Fatalf("provisioning/%s no longer contains %q: update the test", rel, old)
			}
			s = strings.ReplaceAll(s, old, repl)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(prov, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(prov, rel), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dash, err := filepath.Abs("dashboards")
	if err != nil {
		t.Fatal(err)
	}
	copyFile("datasources/megawatch-influxdb.yaml", nil)
	copyFile("dashboards/megawatch.yaml", map[string]string{"/var/lib/grafana/dashboards/megawatch": dash})
	return testenv.StartGrafana(t, prov)
}

func grafanaJSON(t *testing.T, g *testenv.Grafana, method, path string, body any, out any) int {
	t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := g.Request(method, path, string(b))
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, rb, err)
		}
	}
	return resp.StatusCode
}

// frame is a data frame of /api/ds/query's answer.
type frame struct {
	Schema struct {
		Name   string `json:"name"`
		Fields []struct {
			Name   string            `json:"name"`
			Type   string            `json:"type"`
			Labels map[string]string `json:"labels"`
			Config struct {
				DisplayNameFromDS string `json:"displayNameFromDS"`
				DisplayName       string `json:"displayName"`
			} `json:"config"`
		} `json:"fields"`
	} `json:"schema"`
	Data struct {
		Values [][]any `json:"values"`
	} `json:"data"`
}

// names are the display names Grafana gives the frame's value fields (what
// a byName override matches), and the column names (the last dot-separated
// part of a name Grafana built as <measurement>.<column>).
func (f frame) names() []string {
	var out []string
	for _, fl := range f.Schema.Fields {
		if fl.Type == "time" {
			continue
		}
		switch {
		case fl.Config.DisplayName != "":
			out = append(out, fl.Config.DisplayName)
		case fl.Config.DisplayNameFromDS != "":
			out = append(out, fl.Config.DisplayNameFromDS)
		case f.Schema.Name != "":
			out = append(out, f.Schema.Name)
		default:
			out = append(out, fl.Name)
		}
	}
	return out
}

// nonNull reports whether a value field holds a non-null, non-empty value.
func (f frame) nonNull() bool {
	for i, fl := range f.Schema.Fields {
		if fl.Type == "time" || i >= len(f.Data.Values) {
			continue
		}
		for _, v := range f.Data.Values[i] {
			if v != nil && v != "" {
				return true
			}
		}
	}
	return false
}

type dsQueryResult struct {
	Results map[string]struct {
		Status int     `json:"status"`
		Error  string  `json:"error"`
		Frames []frame `json:"frames"`
	} `json:"results"`
}

// query runs one InfluxQL target through POST /api/ds/query, as Grafana's
// frontend sends it once it has substituted the template variables (the
// backend expands $timeFilter and $__interval).
func query(t *testing.T, g *testenv.Grafana, uid, q, alias, format string) ([]frame, error) {
	t.Helper()
	if format == "" {
		format = "time_series"
	}
	body := map[string]any{"from": "now-1h", "to": "now", "queries": []map[string]any{{
		"refId": "A", "datasource": map[string]string{"type": "influxdb", "uid": uid},
		"query": q, "rawQuery": true, "alias": alias, "resultFormat": format, "intervalMs": 10000, "maxDataPoints": 500,
	}}}
	var res dsQueryResult
	code := grafanaJSON(t, g, "POST", "/api/ds/query", body, &res)
	r := res.Results["A"]
	if code != 200 || r.Error != "" {
		return nil, fmt.Errorf("status %d: %s", code, r.Error)
	}
	return r.Frames, nil
}

// substitute does what Grafana's frontend does to a query before sending
// it: template variables get their current value ($__ macros and
// $timeFilter are left to the backend).
func substitute(q string, vals map[string]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(q, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		if name == "timeFilter" || strings.HasPrefix(name, "__") || name == "interval" {
			return m
		}
		if v, ok := vals[name]; ok {
			return v
		}
		missing = append(missing, name)
		return m
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("unknown variables %v", missing)
	}
	return out, nil
}

// outerQuery is q with every parenthesised part removed (subqueries,
// function arguments): what is left is the outer query's clauses.
func outerQuery(q string) string {
	var b strings.Builder
	depth := 0
	for _, r := range q {
		switch {
		case r == '(':
			depth++
		case r == ')':
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

type override struct {
	Matcher struct {
		ID      string `json:"id"`
		Options string `json:"options"`
	} `json:"matcher"`
}

type fullPanel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	FieldConfig struct {
		Overrides []override `json:"overrides"`
	} `json:"fieldConfig"`
	Targets []struct {
		RefID        string `json:"refId"`
		Query        string `json:"query"`
		Alias        string `json:"alias"`
		ResultFormat string `json:"resultFormat"`
		Datasource   struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"targets"`
	Panels []fullPanel `json:"panels"`
}

type fullDashboard struct {
	UID        string      `json:"uid"`
	Panels     []fullPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Query      any    `json:"query"`
			IncludeAll bool   `json:"includeAll"`
			AllValue   string `json:"allValue"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Current struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name        string `json:"name"`
			BuiltIn     int    `json:"builtIn"`
			Query       string `json:"query"`
			TitleColumn string `json:"titleColumn"`
			TextColumn  string `json:"textColumn"`
			TagsColumn  string `json:"tagsColumn"`
			Datasource  struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
}

func flatFull(ps []fullPanel) []fullPanel {
	var out []fullPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatFull(p.Panels)...)
	}
	return out
}

var unexpanded = regexp.MustCompile(`\$\w+|\[\[\w+\]\]`)

// TestDashboardsInRealGrafana provisions the shipped datasource and
// dashboards into a real Grafana 9.3.2, fills influxd through the real
// pipeline (simulated fleet → NATS → ingest and alerts → influxd) and then,
// for every dashboard as Grafana serves it: checks the datasource health,
// resolves the datasource variable against Grafana's datasource list, runs
// every variable query, every panel target and every annotation query
// through POST /api/ds/query, and asserts non-empty frames, no unexpanded
// alias, that every field override matches a field name Grafana returns,
// that every outer query has a time filter, and that the annotations
// return their title, text and tag columns.
func TestDashboardsInRealGrafana(t *testing.T) {
	testenv.Short(t)
	infl := testenv.StartInfluxd(t)
	fillPipeline(t, infl, db) // ingest --ensure-db creates the database and retention policies
	checkPipelineFacility(t, infl)
	g := startProvisionedGrafana(t, infl.URL)

	var dss []struct {
		UID, Type, Name string
		IsDefault       bool `json:"isDefault"`
	}
	grafanaJSON(t, g, "GET", "/api/datasources", nil, &dss)
	if len(dss) != 1 || dss[0].UID != datasourceID || dss[0].Type != "influxdb" || dss[0].IsDefault {
		t.Fatalf("provisioned datasources %+v: want %s, influxdb, not the default", dss, datasourceID)
	}
	var health struct{ Status, Message string }
	if code := grafanaJSON(t, g, "GET", "/api/datasources/uid/"+datasourceID+"/health", nil, &health); code != 200 || health.Status != "OK" {
		t.Fatalf("datasource health: %d %+v", code, health)
	}

	// The provider loads the dashboards asynchronously at start.
	var found []struct{ UID string }
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		grafanaJSON(t, g, "GET", "/api/search?type=dash-db", nil, &found)
		if len(found) >= len(loadDashboards(t)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Grafana provisioned %d dashboards, want %d:\n%s", len(found), len(loadDashboards(t)), g.Output())
		}
	}
	for _, f := range found {
		t.Run(f.UID, func(t *testing.T) {
			var got struct{ Dashboard fullDashboard }
			if code := grafanaJSON(t, g, "GET", "/api/dashboards/uid/"+f.UID, nil, &got); code != 200 {
				t.Fatalf("dashboard %s: %d", f.UID, code)
			}
			checkDashboard(t, g, got.Dashboard, dss[0].UID)
		})
	}
}

func checkDashboard(t *testing.T, g *testenv.Grafana, d fullDashboard, dsUID string) {
	vals := map[string]string{}
	uidOf := func(ref string) (string, error) { return substitute(ref, vals) }
	for _, v := range d.Templating.List {
		if fv, ok := fixedValue(v.Type, v.Query, v.Current.Value); ok {
			vals[v.Name] = fv // as Grafana serves it: the provisioned default
			continue
		}
		switch v.Type {
		case "datasource":
			// Grafana lists the datasources of the variable's type; the
			// dashboards default to the provisioned one.
			if q := queryString(v.Query); q != "influxdb" {
				t.Errorf("datasource variable %s: query %q, want influxdb", v.Name, q)
			}
			if v.Current.Value != datasourceID {
				t.Errorf("datasource variable %s: current %v, want %s", v.Name, v.Current.Value, datasourceID)
			}
			vals[v.Name] = dsUID
		case "query":
			uid, err := uidOf(v.Datasource.UID)
			if err != nil {
				t.Fatalf("variable %s: datasource: %v", v.Name, err)
			}
			q, err := substitute(queryString(v.Query), vals)
			if err != nil {
				t.Fatalf("variable %s: %v", v.Name, err)
			}
			frames, err := query(t, g, uid, q, "", "")
			if err != nil {
				t.Fatalf("variable %s: %q: %v", v.Name, q, err)
			}
			var values []string
			for _, f := range frames {
				for _, col := range f.Data.Values {
					for _, x := range col {
						if s, ok := x.(string); ok {
							values = append(values, s)
						}
					}
				}
			}
			if len(values) == 0 {
				t.Fatalf("variable %s: %q returned no values", v.Name, q)
			}
			vals[v.Name] = values[0]
		}
	}
	if vals[dsVar] == "" {
		t.Fatalf("no %q datasource variable: halls routed to separate InfluxDBs cannot be viewed", dsVar)
	}
	n := 0
	for _, p := range flatFull(d.Panels) {
		if p.Type == "row" {
			continue
		}
		var names []string
		for _, tg := range p.Targets {
			what := fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)
			if tg.Datasource.UID != "${"+dsVar+"}" {
				t.Errorf("%s: datasource uid %q, want ${%s}", what, tg.Datasource.UID, dsVar)
			}
			if !strings.Contains(outerQuery(tg.Query), "$timeFilter") {
				t.Errorf("%s: the outer query has no $timeFilter: %s", what, tg.Query)
			}
			uid, err := uidOf(tg.Datasource.UID)
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			q, err := substitute(tg.Query, vals)
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			// The frontend expands variables in aliases too, leaving the
			// alias patterns ($col, $tag_x, $m) to the datasource.
			alias := varRef.ReplaceAllStringFunc(tg.Alias, func(m string) string {
				sub := varRef.FindStringSubmatch(m)
				if v, ok := vals[sub[1]+sub[2]]; ok {
					return v
				}
				return m
			})
			frames, err := query(t, g, uid, q, alias, tg.ResultFormat)
			n++
			if err != nil {
				t.Errorf("%s: %q: %v", what, q, err)
				continue
			}
			data := false
			for _, f := range frames {
				data = data || f.nonNull()
				for _, name := range f.names() {
					if unexpanded.MatchString(name) {
						t.Errorf("%s: field name %q: the alias names a variable or tag the query does not group by", what, name)
					}
					names = append(names, name)
				}
			}
			if !data {
				t.Errorf("%s: %q returned no data (%d frames)", what, q, len(frames))
			}
			checkFacilityPanel(t, p.Title, tg.RefID, frames)
		}
		for _, o := range p.FieldConfig.Overrides {
			switch o.Matcher.ID {
			case "byName":
				if !slices.Contains(names, o.Matcher.Options) {
					t.Errorf("panel %q: override byName %q matches none of the fields %q", p.Title, o.Matcher.Options, names)
				}
			case "byRegexp":
				re, err := regexp.Compile(o.Matcher.Options)
				if err != nil {
					t.Errorf("panel %q: override byRegexp %q: %v", p.Title, o.Matcher.Options, err)
					continue
				}
				if !slices.ContainsFunc(names, re.MatchString) {
					t.Errorf("panel %q: override byRegexp %q matches none of the fields %q", p.Title, o.Matcher.Options, names)
				}
			}
		}
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 1 {
			continue
		}
		what := fmt.Sprintf("annotation %q", a.Name)
		if !strings.Contains(outerQuery(a.Query), "$timeFilter") {
			t.Errorf("%s: no $timeFilter", what)
		}
		uid, err := uidOf(a.Datasource.UID)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		q, err := substitute(a.Query, vals)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		frames, err := query(t, g, uid, q, "", "")
		n++
		if err != nil {
			t.Errorf("%s: %q: %v", what, q, err)
			continue
		}
		// Grafana builds an annotation from the columns the title, text
		// and tags options name: each must come back, with values.
		cols := map[string]bool{}
		for _, f := range frames {
			if !f.nonNull() {
				continue
			}
			for _, name := range f.names() {
				cols[name[strings.LastIndex(name, ".")+1:]] = true
			}
		}
		want := []string{a.TitleColumn, a.TextColumn}
		for tag := range strings.SplitSeq(a.TagsColumn, ",") {
			want = append(want, strings.TrimSpace(tag))
		}
		if a.TitleColumn == "" || a.TagsColumn == "" {
			t.Errorf("%s: no titleColumn or tagsColumn", what)
		}
		for _, c := range want {
			if c != "" && !cols[c] {
				t.Errorf("%s: column %q (title, text or tag) not in the answer %v: %s", what, c, cols, q)
			}
		}
	}
	t.Logf("%d queries ran through Grafana", n)
}
