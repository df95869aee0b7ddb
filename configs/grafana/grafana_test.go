// Package grafana_test checks the Grafana dashboards under
// configs/grafana/dashboards against a real influxd: every variable query
// and every panel and annotation query, with the variables filled, must run
// without error and return data.
package grafana_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/megawatch/megawatch/internal/testenv"
)

const (
	db           = "megawatch"
	datasourceID = "megawatch-influxdb"
	// What Grafana puts for its macros with a 1 h range on a wide panel.
	timeFilter = "time > now() - 1h"
	interval   = "10s"
)

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string      `json:"refId"`
	Datasource *datasource `json:"datasource"`
	Query      string      `json:"query"`
	RawQuery   bool        `json:"rawQuery"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasource              `json:"datasource"`
	Targets    []target                 `json:"targets"`
	Panels     []panel                  `json:"panels"` // collapsed rows
	GridPos    struct{ X, Y, W, H int } `json:"gridPos"`
}

type variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"` // string, or an object in newer schema versions
	Datasource *datasource `json:"datasource"`
	Multi      bool        `json:"multi"`
	IncludeAll bool        `json:"includeAll"`
	AllValue   string      `json:"allValue"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

// fixedValue is the value of a variable that needs no query (textbox,
// constant, custom): its current value, else its default (query; for
// custom, the first of its comma-separated options).
func fixedValue(typ string, query, current any) (string, bool) {
	switch typ {
	case "textbox", "constant", "custom":
	default:
		return "", false
	}
	if s, ok := current.(string); ok && s != "" {
		return s, true
	}
	q := queryString(query)
	if typ == "custom" {
		q, _, _ = strings.Cut(q, ",")
	}
	return strings.TrimSpace(q), true
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Datasource *datasource `json:"datasource"`
			Query      string      `json:"query"`
			BuiltIn    int         `json:"builtIn"`
			Target     *target     `json:"target"`
		} `json:"list"`
	} `json:"annotations"`
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		dec := json.NewDecoder(strings.NewReader(string(b)))
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// flatPanels returns the panels with their rows' nested panels.
func flatPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, flatPanels(p.Panels)...)
	}
	return out
}

// TestDashboardsAreWellFormed checks what Grafana needs without a
// database: unique uids and panel ids, every query panel on the provisioned
// datasource with raw InfluxQL, panels inside the 24-column grid, and the
// three dashboards the issue asks for.
func TestDashboardsAreWellFormed(t *testing.T) {
	ds := loadDashboards(t)
	for _, want := range []string{"campus-overview.json", "hall.json", "gpu-thermal.json"} {
		if _, ok := ds[want]; !ok {
			t.Errorf("dashboard %s missing", want)
		}
	}
	uids := map[string]string{}
	for file, d := range ds {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", file)
		}
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s: uid %q also used by %s", file, d.UID, other)
		}
		uids[d.UID] = file
		ids := map[int]bool{}
		for _, p := range flatPanels(d.Panels) {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d used twice", file, p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
				t.Errorf("%s: panel %q gridPos %+v outside the 24-column grid", file, p.Title, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				dsrc := tg.Datasource
				if dsrc == nil {
					dsrc = p.Datasource
				}
				if dsrc == nil || dsrc.UID != "${"+dsVar+"}" || dsrc.Type != "influxdb" {
					t.Errorf("%s: panel %q target %s: datasource %+v, want influxdb ${%s}", file, p.Title, tg.RefID, dsrc, dsVar)
				}
				if !tg.RawQuery || strings.TrimSpace(tg.Query) == "" {
					t.Errorf("%s: panel %q target %s: want a raw InfluxQL query", file, p.Title, tg.RefID)
				}
			}
		}
		names := map[string]bool{}
		for _, v := range d.Templating.List {
			names[v.Name] = true
			if v.IncludeAll && v.AllValue == "" {
				t.Errorf("%s: variable %s offers All without an allValue (Grafana would list every value)", file, v.Name)
			}
		}
		if !names["site"] || (!names["hall"] && file != "campus-overview.json") {
			t.Errorf("%s: template variables %v, want site and hall", file, names)
		}
	}
}

// TestProvisioningFiles checks the datasource and dashboard provider files.
func TestProvisioningFiles(t *testing.T) {
	var dsf struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, UID, Type, URL, Database string
			IsDefault                      bool           `yaml:"isDefault"`
			JSONData                       map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	b, err := os.ReadFile(filepath.Join("provisioning", "datasources", "megawatch-influxdb.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &dsf); err != nil {
		t.Fatal(err)
	}
	if dsf.APIVersion != 1 || len(dsf.Datasources) != 1 {
		t.Fatalf("datasource provisioning: %+v", dsf)
	}
	d := dsf.Datasources[0]
	if d.UID != datasourceID || d.Type != "influxdb" || d.JSONData["dbName"] != db || d.Database != db || d.JSONData["version"] != "InfluxQL" || d.IsDefault {
		t.Errorf("datasource %+v: want uid %s, influxdb, InfluxQL, database and jsonData.dbName %s (Grafana <= 9.3 reads the first), not isDefault", d, datasourceID, db)
	}
	var prov struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Type    string         `yaml:"type"`
			Options map[string]any `yaml:"options"`
		} `yaml:"providers"`
	}
	b, err = os.ReadFile(filepath.Join("provisioning", "dashboards", "megawatch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options["path"] == nil {
		t.Errorf("dashboard provider: %+v", prov)
	}
}

var varRef = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// expand replaces Grafana's macros and the variables' values in q.
func expand(q string, vals map[string]string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(q, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		switch name {
		case "timeFilter", "__timeFilter":
			return timeFilter
		case "__interval", "interval":
			return interval
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

func queryString(q any) string {
	switch q := q.(type) {
	case string:
		return q
	case map[string]any:
		if s, ok := q["query"].(string); ok {
			return s
		}
	}
	return ""
}

// hasData reports whether any series has a row with a non-null value
// besides the time column.
func hasData(series []testenv.Series) bool {
	for _, s := range series {
		for _, row := range s.Values {
			for i, v := range row {
				if i < len(s.Columns) && s.Columns[i] == "time" {
					continue
				}
				if v != nil {
					return true
				}
			}
		}
	}
	return false
}

// TestDashboardQueriesReturnData fills a real influxd and runs every
// variable query (in order, each variable set to its first value, as
// Grafana does), every panel query and every annotation query. It does so
// twice: on data from the real pipeline (sim fleet → NATS → ingest and
// alerts → influxd), and on synthetic line protocol that follows
// DESIGN.md's schema with fixed throttled and lost GPUs and a full
// pending → firing → resolved alert.
func TestDashboardQueriesReturnData(t *testing.T) {
	testenv.Short(t)
	// An operator whose ingest writes one bucket (no measurements) points
	// the dashboards' retention policy variables at it.
	oneBucket := func(t *testing.T, d *testenv.Influxd, db string) {
		tg := shippedTarget(t, d.URL)
		tg.Measurements, tg.RetentionPolicies = nil, nil
		fillPipelineTo(t, d, db, tg)
	}
	autogen := map[string]string{"rp_gpu": "autogen", "rp_node": "autogen", "rp_rollup": "autogen", "rp_alert": "autogen", "rp_meter": "autogen"}
	for _, f := range []struct {
		name string
		fill func(*testing.T, *testenv.Influxd, string)
		vars map[string]string
	}{{"pipeline", fillPipeline, nil}, {"synthetic", fillSynthetic, nil}, {"one-bucket", oneBucket, autogen}} {
		t.Run(f.name, func(t *testing.T) {
			infl := testenv.StartInfluxd(t)
			f.fill(t, infl, db) // creates the database and retention policies
			runDashboardQueries(t, infl, f.vars)
		})
	}
}

// runDashboardQueries runs every dashboard's queries; set overrides
// variables as ?var-name=value would.
func runDashboardQueries(t *testing.T, infl *testenv.Influxd, set map[string]string) {
	for file, d := range loadDashboards(t) {
		t.Run(strings.TrimSuffix(file, ".json"), func(t *testing.T) {
			vals := map[string]string{}
			for _, v := range d.Templating.List {
				if fv, ok := fixedValue(v.Type, v.Query, v.Current.Value); ok {
					if sv, ok := set[v.Name]; ok {
						fv = sv
					}
					vals[v.Name] = fv
					continue
				}
				if v.Type != "query" {
					continue
				}
				q, err := expand(queryString(v.Query), vals)
				if err != nil {
					t.Fatalf("variable %s: %v", v.Name, err)
				}
				series, err := infl.QueryErr(db, q)
				if err != nil {
					t.Fatalf("variable %s: %q: %v", v.Name, q, err)
				}
				var values []string
				for _, s := range series {
					for _, row := range s.Values {
						if len(row) == 2 { // SHOW TAG VALUES: key, value
							values = append(values, fmt.Sprint(row[1]))
						}
					}
				}
				if len(values) == 0 {
					t.Fatalf("variable %s: %q returned no values", v.Name, q)
				}
				vals[v.Name] = values[0]
				t.Logf("variable %s = %s (of %d)", v.Name, values[0], len(values))
			}
			run := func(what, q string) {
				t.Helper()
				eq, err := expand(q, vals)
				if err != nil {
					t.Errorf("%s: %v", what, err)
					return
				}
				series, err := infl.QueryErr(db, eq)
				if err != nil {
					t.Errorf("%s: %q: %v", what, eq, err)
					return
				}
				if !hasData(series) {
					t.Errorf("%s: %q returned no data", what, eq)
				}
			}
			n := 0
			runAll := func(how string) {
				for _, p := range flatPanels(d.Panels) {
					for _, tg := range p.Targets {
						run(fmt.Sprintf("%s: panel %q target %s", how, p.Title, tg.RefID), tg.Query)
						n++
					}
				}
				for _, a := range d.Annotations.List {
					if a.BuiltIn == 1 {
						continue
					}
					if a.Target == nil || a.Target.Query != a.Query {
						t.Errorf("annotation %q: target.query (Grafana 8+) must equal query (legacy)", a.Name)
						continue
					}
					run(fmt.Sprintf("%s: annotation %q", how, a.Name), a.Query)
					n++
				}
			}
			runAll("first values")
			// Variables that offer "All" are run with its value too, as
			// Grafana substitutes it (allValue, a regex).
			all := false
			for _, v := range d.Templating.List {
				if v.IncludeAll {
					vals[v.Name], all = v.AllValue, true
				}
			}
			if all {
				runAll("All")
			}
			t.Logf("%d queries ran", n)
		})
	}
}
