package alerts

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/megawatch/megawatch/alerts/aggregate"
	"github.com/megawatch/megawatch/alerts/rules"
	"github.com/megawatch/megawatch/configs"
	"github.com/megawatch/megawatch/internal/topology"
)

func TestExampleConfigEqualsDefaults(t *testing.T) {
	got, err := LoadConfig(filepath.Join("..", "configs", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Fatalf("configs/alerts.yaml differs from DefaultConfig():\n got %+v\nwant %+v", got, want)
	}
	if _, err := configs.FS.ReadFile("alerts.yaml"); err != nil {
		t.Fatalf("alerts.yaml is not embedded: %v", err)
	}
}

func TestDefaultRulesFitTheShippedTopologies(t *testing.T) {
	for _, name := range []string{"topology.yaml", "demo-topology.yaml"} {
		b, err := configs.FS.ReadFile(name)
		if err != nil {
			t.Skipf("%s: %v", name, err)
		}
		topo, err := topology.Parse(b, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		if _, err := New(cfg, topo, nil, nil, nil); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateReportsEveryProblemWithItsKey(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "alerts.yaml")
	os.WriteFile(p, []byte(`
window: 1s
slot: 300ms
stale_after: -1
analysis_window: 1s
kv_bucket: "a.b"
notifiers:
  alertmanager: {urls: ["am:9093"], resend_interval: 0s}
  webhook: {url: "ftp://x", secret_env: A, secret_file: B}
rules:
  - name: hall_hot
    level: hall
    metric: power_mw
    threshold: 10
    of_capacity: 0.9
    severity: page
  - name: hall_hot
    metric: watts
    threshold: 1
    severity: ""
  - name: osc
    level: site
    metric: oscillation_mw
    band: [3, 1]
    threshold: 5
    clear: 7
    severity: warning
    annotations: {summary: "{{ .Value "}
`), 0o644)
	_, err := LoadConfig(p)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		"slot:", "stale_after:", "analysis_window:", "kv_bucket:",
		"notifiers.alertmanager.urls[0]:", "notifiers.alertmanager.resend_interval:", "notifiers.webhook.url:", "notifiers.webhook.secret_env:",
		"rules[0] (hall_hot): threshold: set exactly one of threshold and of_capacity",
		"rules[1] (hall_hot): name: duplicate of rules[0]", "rules[1] (hall_hot): level: set level or domains",
		"rules[1] (hall_hot): metric: unknown metric \"watts\"", "rules[1] (hall_hot): severity:",
		"rules[2] (osc): band:", "rules[2] (osc): clear: 7 must be <= the threshold 5", "rules[2] (osc): annotations.summary:",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if !strings.Contains(msg, p+": ") {
		t.Errorf("problems do not name the file:\n%s", msg)
	}
}

func TestRulesFileReplacesRules(t *testing.T) {
	dir := t.TempDir()
	rf := filepath.Join(dir, "rules.yaml")
	os.WriteFile(rf, []byte("rules:\n  - {name: r1, level: site, metric: coverage, threshold: 0.9, severity: warning}\n"), 0o644)
	cf := filepath.Join(dir, "alerts.yaml")
	os.WriteFile(cf, []byte("rules_file: "+rf+"\n"), 0o644)
	cfg, err := LoadConfig(cf)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rules) != 1 || cfg.Rules[0].Name != "r1" {
		t.Fatalf("rules %+v", cfg.Rules)
	}
}

func TestRuleLevelMustExistInTopology(t *testing.T) {
	topo, err := topology.Parse([]byte(scenarioTopo), "scenario")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Rules[0].Level = "pdu"
	if _, err := New(cfg, topo, nil, nil, nil); err == nil || !strings.Contains(err.Error(), `rules[0] (hall_power_high): level: "pdu" is not a topology level`) {
		t.Fatalf("got %v", err)
	}
}

func TestPowerFilterOfScopes(t *testing.T) {
	topo, err := topology.Parse([]byte(`
levels: [site, hall, row, pdu, rack]
domains:
  - name: dc1
    capacity_kw: 100
    children:
      - name: h1
        capacity_kw: 100
        children:
          - name: r1
            capacity_kw: 100
            children:
              - name: p1
                capacity_kw: 100
                children:
                  - name: k1
                    capacity_kw: 100
                    nodes: [n1]
`), "t")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"dc1":             "megawatch.v1.power.dc1.>",
		"dc1/h1":          "megawatch.v1.power.dc1.h1.>",
		"dc1/h1/r1/p1":    "megawatch.v1.power.dc1.h1.r1.>",
		"dc1/h1/r1/p1/k1": "megawatch.v1.power.dc1.h1.r1.k1.>",
	} {
		d, err := topo.Scope(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := powerFilter(d); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
}

// The FFT runs only where someone looks: the configured levels plus the
// levels of oscillation rules; an oscillation rule that selects domains by
// key alone (any level) turns it on everywhere.
func TestOscillationLevels(t *testing.T) {
	f := func(cfg Config, want []string) {
		t.Helper()
		if got := cfg.oscLevels(); !slices.Equal(got, want) {
			t.Fatalf("oscLevels() = %v, want %v", got, want)
		}
	}
	c := DefaultConfig()
	f(c, []string{"site", "hall", "row"})
	th := 1.0
	c.Rules = append(c.Rules, rules.Rule{Name: "rack_osc", Level: "rack", Metric: rules.MetricOscillationMW, Band: []float64{0.2, 3}, Threshold: &th, Severity: "warning"})
	f(c, []string{"site", "hall", "row", "rack"})
	c.Rules = append(c.Rules, rules.Rule{Name: "any_osc", Domains: []string{"dc1/*"}, Metric: rules.MetricOscillationMW, Band: []float64{0.2, 3}, Threshold: &th, Severity: "warning"})
	f(c, nil)
	c = DefaultConfig()
	c.OscillationLevels = nil
	f(c, nil)
	c.OscillationLevels = []string{"ro w"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "oscillation_levels[0]") {
		t.Fatalf("bad level accepted: %v", err)
	}
}

func TestNodeModelConfig(t *testing.T) {
	dir := t.TempDir()
	f := func(name, body, wantErr string, want aggregate.NodeModel) {
		t.Helper()
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(p)
		if wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), wantErr) || !strings.Contains(err.Error(), p) {
				t.Errorf("%s: error %v, want one naming %s and %q", name, err, p, wantErr)
			}
			return
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		if got := cfg.NodeModel.model(); got != want {
			t.Errorf("%s: node model %+v, want %+v", name, got, want)
		}
	}
	b200, _, _ := lookupNodeType("dgxb200")
	f("type", "node_model: {node_type: dgxb200}\n", "", aggregate.NodeModel{HostW: b200, PerGPUW: 600})
	f("figures", "node_model: {host_w: 2000, per_gpu_w: 150}\n", "", aggregate.NodeModel{HostW: 2000, PerGPUW: 150})
	f("empty", "node_model: {}\n", "", aggregate.NodeModel{})
	f("unknown_type", "node_model: {node_type: dgxa100}\n", `node_model.node_type: unknown node type "dgxa100" (one of dgxb200, dgxh100, dgxh200)`, aggregate.NodeModel{})
	f("both", "node_model: {node_type: dgxh100, host_w: 1}\n", "node_model.node_type: set node_type or host_w and per_gpu_w, not both", aggregate.NodeModel{})
	f("half", "node_model: {host_w: 1000}\n", "node_model.host_w: set both host_w and per_gpu_w", aggregate.NodeModel{})
	f("negative", "node_model: {host_w: -1, per_gpu_w: 100}\n", "node_model.host_w: want 0..100000 W per node, got -1", aggregate.NodeModel{})
	f("bad_key", "node_model:\n  node_typ: dgxh100\n", "node_model.node_typ", aggregate.NodeModel{})
}

// Only facility oscillation rules give their levels the facility spectrum.
func TestFacilityOscLevels(t *testing.T) {
	cfg := DefaultConfig()
	if l, all := cfg.facilityOscLevels(); l != nil || all {
		t.Fatalf("shipped rules (GPU oscillation): %v %v, want none", l, all)
	}
	cfg.Rules = append(cfg.Rules, rules.Rule{Name: "fo", Level: "hall", Metric: rules.MetricOscillationMW, Power: rules.PowerFacility, Band: []float64{0.2, 3}, Threshold: f(1), Severity: "warning"})
	if l, all := cfg.facilityOscLevels(); !slices.Equal(l, []string{"hall"}) || all {
		t.Fatalf("hall facility oscillation rule: %v %v", l, all)
	}
	cfg.Rules = append(cfg.Rules, rules.Rule{Name: "fo2", Domains: []string{"dc1/h1"}, Metric: rules.MetricOscillationMW, Power: rules.PowerFacility, Band: []float64{0.2, 3}, Threshold: f(1), Severity: "warning"})
	if _, all := cfg.facilityOscLevels(); !all {
		t.Fatal("a facility oscillation rule by domain key needs every level")
	}
}
