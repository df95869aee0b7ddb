package grafana_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/config"
)

// fromClause is a FROM and what follows it.
var (
	fromClause = regexp.MustCompile(`(?i)\bFROM\s+(\S*)`)
	// fromPolicy is a FROM target that names its retention policy with a
	// dashboard variable: "$rp_x"."m" or "${rp_x}"."m".
	fromPolicy = regexp.MustCompile(`^"\$(?:\{(\w+)\}|(\w+))"\."(\w+)"`)
)

// deployedIngestTargets are the ingest configs shipped for deployments, as
// ingest reads them (each over the built-in defaults): the first target of
// each, by where it comes from.
func deployedIngestTargets(t *testing.T) map[string]ingest.Target {
	t.Helper()
	out := map[string]ingest.Target{shippedIngestConfig: shippedTarget(t, "http://unused")}
	t.Setenv("CREDENTIALS_DIRECTORY", "/run/credentials/megawatch-ingest.service")
	sc := ingest.DefaultConfig()
	if err := config.Decode(mustRead(t, "../systemd/ingest.yaml"), "configs/systemd/ingest.yaml", &sc); err != nil {
		t.Fatal(err)
	}
	out["configs/systemd/ingest.yaml"] = sc.Targets[0]
	b, err := os.ReadFile("../k8s/10-config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	for {
		var doc struct {
			Metadata struct{ Name string }
			Data     map[string]string
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		s, ok := doc.Data["ingest.yaml"]
		if !ok {
			continue
		}
		where := "configs/k8s/10-config.yaml ConfigMap " + doc.Metadata.Name + " ingest.yaml"
		c := ingest.DefaultConfig()
		if err := config.Decode([]byte(s), where, &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Targets) == 0 {
			t.Fatalf("%s: no targets", where)
		}
		out[where] = c.Targets[0]
	}
	if len(out) < 3 {
		t.Fatal("configs/k8s/10-config.yaml: no ingest.yaml ConfigMap key")
	}
	return out
}

// TestQueriesNameRetentionPolicy checks that every FROM of every query
// (variables, panels, annotations) names its retention policy through a
// dashboard variable, "$rp_<measurement>"."<measurement>", whose default is
// the policy the shipped ingest configs (configs/ingest.yaml and the
// Kubernetes ConfigMap) write that measurement to. A bare FROM "rollup"
// reads the database's default policy (autogen), where ingest writes
// nothing, and the dashboard is empty.
func TestQueriesNameRetentionPolicy(t *testing.T) {
	targets := deployedIngestTargets(t)
	for file, d := range loadDashboards(t) {
		defaults := map[string]string{}
		for _, v := range d.Templating.List {
			if fv, ok := fixedValue(v.Type, v.Query, v.Current.Value); ok {
				defaults[v.Name] = fv
			}
		}
		var queries []struct{ what, q string }
		add := func(what, q string) { queries = append(queries, struct{ what, q string }{what, q}) }
		for _, v := range d.Templating.List {
			add("variable "+v.Name, queryString(v.Query))
		}
		for _, p := range flatPanels(d.Panels) {
			for _, tg := range p.Targets {
				add("panel "+p.Title+" target "+tg.RefID, tg.Query)
			}
		}
		for _, a := range d.Annotations.List {
			add("annotation "+a.Name, a.Query)
			if a.Target != nil {
				add("annotation "+a.Name+" target", a.Target.Query)
			}
		}
		n, seen := 0, map[string]bool{}
		for _, q := range queries {
			for _, m := range fromClause.FindAllStringSubmatchIndex(q.q, -1) {
				rest := q.q[m[2]:]
				if strings.HasPrefix(rest, "(") {
					continue // a subquery: its own FROM is checked
				}
				n++
				sub := fromPolicy.FindStringSubmatch(rest)
				if sub == nil {
					t.Errorf("%s: %s: FROM %.40s names no retention policy: write FROM \"$rp_<measurement>\".\"<measurement>\" (a bare measurement reads the default policy, autogen, where ingest writes nothing)", file, q.what, rest)
					continue
				}
				name, meas := sub[1]+sub[2], sub[3]
				def, ok := defaults[name]
				if !ok {
					t.Errorf("%s: %s: retention policy variable $%s is not a textbox/constant/custom variable of the dashboard", file, q.what, name)
					continue
				}
				for where, tg := range targets {
					if rp := shippedRP(t, tg, meas); rp != def && !seen[name+" "+where] {
						seen[name+" "+where] = true
						t.Errorf("%s: %s: $%s defaults to %q, but %s writes %s to %q", file, q.what, name, def, where, meas, rp)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no FROM found: the check is broken", file)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
