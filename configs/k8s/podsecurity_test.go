package k8s_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters"
)

// manifests holds every object of configs/k8s, each strictly decoded into
// its k8s.io/api type (an unknown or misspelt field fails the test).
type manifests struct {
	applied      map[string]bool // "Kind/namespace/name" of the objects `kubectl apply -f configs/k8s/` creates
	namespaces   []*corev1.Namespace
	configMaps   []*corev1.ConfigMap
	secrets      []*corev1.Secret
	services     []*corev1.Service
	daemonSets   []*appsv1.DaemonSet
	deployments  []*appsv1.Deployment
	pdbs         []*policyv1.PodDisruptionBudget
	netpols      []*networkingv1.NetworkPolicy
	configByFile map[string]string // "namespace/configmap key" → content
}

func key(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

// splitDocs splits a multi-document YAML file.
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{applied: map[string]bool{}, configByFile: map[string]string{}}
	for _, pattern := range []string{"*.yaml", "examples/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil || len(files) == 0 {
			t.Fatalf("no %s: %v", pattern, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for i, doc := range splitDocs(b) {
				where := fmt.Sprintf("%s#%d", f, i)
				var tm metav1.TypeMeta
				if err := yaml.Unmarshal(doc, &tm); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				var obj interface {
					GetNamespace() string
					GetName() string
				}
				switch tm.Kind {
				case "Namespace":
					o := &corev1.Namespace{}
					m.namespaces, obj = append(m.namespaces, o), o
				case "ConfigMap":
					o := &corev1.ConfigMap{}
					m.configMaps, obj = append(m.configMaps, o), o
				case "Secret":
					o := &corev1.Secret{}
					m.secrets, obj = append(m.secrets, o), o
				case "Service":
					o := &corev1.Service{}
					m.services, obj = append(m.services, o), o
				case "DaemonSet":
					o := &appsv1.DaemonSet{}
					m.daemonSets, obj = append(m.daemonSets, o), o
				case "Deployment":
					o := &appsv1.Deployment{}
					m.deployments, obj = append(m.deployments, o), o
				case "PodDisruptionBudget":
					o := &policyv1.PodDisruptionBudget{}
					m.pdbs, obj = append(m.pdbs, o), o
				case "NetworkPolicy":
					o := &networkingv1.NetworkPolicy{}
					m.netpols, obj = append(m.netpols, o), o
				default:
					t.Fatalf("%s: kind %q: add it to the test", where, tm.Kind)
				}
				if err := yaml.UnmarshalStrict(doc, obj); err != nil {
					t.Errorf("%s: %s: %v", where, tm.Kind, err)
					continue
				}
				if !strings.Contains(f, "/") {
					m.applied[key(tm.Kind, obj.GetNamespace(), obj.GetName())] = true
				}
				if cm, ok := obj.(*corev1.ConfigMap); ok {
					for k, v := range cm.Data {
						m.configByFile[cm.Namespace+"/"+k] = v
					}
				}
			}
		}
	}
	return m
}

type workload struct {
	kind, ns, name string
	tmpl           corev1.PodTemplateSpec
	selector       *metav1.LabelSelector
}

func (m *manifests) workloads() []workload {
	var out []workload
	for _, d := range m.daemonSets {
		out = append(out, workload{"DaemonSet", d.Namespace, d.Name, d.Spec.Template, d.Spec.Selector})
	}
	for _, d := range m.deployments {
		out = append(out, workload{"Deployment", d.Namespace, d.Name, d.Spec.Template, d.Spec.Selector})
	}
	return out
}

func (m *manifests) namespace(name string) *corev1.Namespace {
	for _, n := range m.namespaces {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// imageUser reads the Dockerfile's USER lines (one per final stage).
func imageUser(t *testing.T) []string {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var users []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "USER "); ok {
			users = append(users, strings.TrimSpace(u))
		}
	}
	return users
}

// TestPodSecurity evaluates every pod template with the upstream Pod
// Security Admission checks at its namespace's enforce level: the pods
// that `kubectl apply -f configs/k8s/` creates are admitted. The
// collector's namespace is privileged for exactly one reason, checked
// here: at baseline, hostPath volumes are its only violation.
func TestPodSecurity(t *testing.T) {
	m := loadManifests(t)
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ws := m.workloads()
	if len(ws) < 4 {
		t.Fatalf("%d workloads, want the collector, ingest, alerts and meters", len(ws))
	}
	for _, w := range ws {
		ns := m.namespace(w.ns)
		if ns == nil || !m.applied[key("Namespace", "", w.ns)] {
			t.Errorf("%s %s: namespace %q is not among the applied manifests", w.kind, w.name, w.ns)
			continue
		}
		// The admission plugin's defaults: privileged, latest (a label
		// without -version means latest).
		latest := psapi.LevelVersion{Level: psapi.LevelPrivileged, Version: psapi.LatestVersion()}
		pol, errs := psapi.PolicyToEvaluate(ns.Labels, psapi.Policy{Enforce: latest, Audit: latest, Warn: latest})
		if len(errs) > 0 {
			t.Errorf("namespace %s: pod-security labels: %v", ns.Name, errs)
			continue
		}
		if pol.Enforce.Level == psapi.LevelPrivileged && w.name != "megawatch-collector" {
			t.Errorf("%s %s runs in privileged namespace %s", w.kind, w.name, w.ns)
		}
		res := policy.AggregateCheckResults(eval.EvaluatePod(pol.Enforce, &w.tmpl.ObjectMeta, &w.tmpl.Spec))
		if !res.Allowed {
			t.Errorf("%s %s: forbidden in namespace %s (enforce %s): %s: %s", w.kind, w.name, w.ns, pol.Enforce.Level, res.ForbiddenReason(), res.ForbiddenDetail())
		}
		if w.name == "megawatch-collector" {
			var failed []string
			for _, r := range eval.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelBaseline, Version: psapi.LatestVersion()}, &w.tmpl.ObjectMeta, &w.tmpl.Spec) {
				if !r.Allowed {
					failed = append(failed, r.ForbiddenReason)
				}
			}
			if !slices.Equal(failed, []string{"hostPath volumes"}) {
				t.Errorf("collector at baseline: violations %q, want only the hostPath volumes that justify its privileged namespace", failed)
			}
		} else if pol.Enforce.Level != psapi.LevelRestricted {
			t.Errorf("%s %s: namespace %s enforces %s, want restricted", w.kind, w.name, w.ns, pol.Enforce.Level)
		}
	}
}

// TestPodsStartAsTheImageUser: numeric runAsUser/runAsGroup/fsGroup equal
// to the Dockerfile's numeric USER (kubelet cannot check runAsNonRoot
// against a user name), and every Secret file readable by that group.
func TestPodsStartAsTheImageUser(t *testing.T) {
	m := loadManifests(t)
	users := imageUser(t)
	if len(users) != 2 {
		t.Fatalf("Dockerfile USER lines %q, want one per image", users)
	}
	for _, u := range users {
		if u != "65532:65532" {
			t.Errorf("Dockerfile USER %q, want numeric 65532:65532", u)
		}
	}
	for _, w := range m.workloads() {
		sc := w.tmpl.Spec.SecurityContext
		what := w.kind + " " + w.name
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsGroup == nil || *sc.RunAsGroup != 65532 ||
			sc.FSGroup == nil || *sc.FSGroup != 65532 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod securityContext %+v, want runAsUser, runAsGroup, fsGroup 65532 and runAsNonRoot", what, sc)
		}
		for _, v := range w.tmpl.Spec.Volumes {
			if v.Secret == nil {
				continue
			}
			mode := int32(0o644)
			if v.Secret.DefaultMode != nil {
				mode = *v.Secret.DefaultMode
			}
			if mode&0o040 == 0 {
				t.Errorf("%s: secret volume %s mode %#o: the files are root:65532, so uid 65532 reads them only with the group read bit", what, v.Name, mode)
			}
			if mode&0o007 != 0 {
				t.Errorf("%s: secret volume %s mode %#o is world-readable", what, v.Name, mode)
			}
		}
	}
}

// TestManifestsAreComplete: a re-apply never clobbers credentials or the
// topology (no Secret and no topology ConfigMap on the apply path, both
// in examples/); every ConfigMap and Secret a pod uses exists in one of
// the two places; the topology is mounted where each config says; every
// container has probes, requests and a memory limit and a pinned image;
// every Deployment has a PodDisruptionBudget and every pod a
// NetworkPolicy; the ConfigMaps' megawatch configs decode strictly, and
// alerts' pages with the env the Deployment sets.
func TestManifestsAreComplete(t *testing.T) {
	m := loadManifests(t)
	have := map[string]bool{}
	for _, s := range m.secrets {
		if m.applied[key("Secret", s.Namespace, s.Name)] {
			t.Errorf("Secret %s/%s is on the `kubectl apply -f configs/k8s/` path: a re-apply would overwrite the real one; move it to examples/", s.Namespace, s.Name)
		}
		have[key("Secret", s.Namespace, s.Name)] = true
	}
	for _, c := range m.configMaps {
		if c.Name == "megawatch-topology" && m.applied[key("ConfigMap", c.Namespace, c.Name)] {
			t.Errorf("ConfigMap %s/megawatch-topology is on the apply path: a re-apply would replace the real topology", c.Namespace)
		}
		have[key("ConfigMap", c.Namespace, c.Name)] = true
	}
	pinned := regexp.MustCompile(`^[a-z0-9./-]+(:[0-9][\w.-]*|@sha256:[0-9a-f]{64})$`)
	for _, w := range m.workloads() {
		what := w.kind + " " + w.name
		spec := w.tmpl.Spec
		for _, v := range spec.Volumes {
			switch {
			case v.Secret != nil && !have[key("Secret", w.ns, v.Secret.SecretName)]:
				t.Errorf("%s: volume %s: Secret %s/%s is nowhere (examples/secrets.yaml)", what, v.Name, w.ns, v.Secret.SecretName)
			case v.ConfigMap != nil && !have[key("ConfigMap", w.ns, v.ConfigMap.Name)]:
				t.Errorf("%s: volume %s: ConfigMap %s/%s is nowhere", what, v.Name, w.ns, v.ConfigMap.Name)
			}
		}
		all := append(slices.Clone(spec.InitContainers), spec.Containers...)
		for _, c := range all {
			if !pinned.MatchString(c.Image) {
				t.Errorf("%s: container %s image %q is not pinned to a version tag or digest", what, c.Name, c.Image)
			}
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("%s: container %s: want cpu and memory requests and a memory limit, got %+v", what, c.Name, r)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: container %s: want readOnlyRootFilesystem", what, c.Name)
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !have[key("Secret", w.ns, e.ValueFrom.SecretKeyRef.Name)] {
					t.Errorf("%s: env %s: Secret %s is nowhere", what, e.Name, e.ValueFrom.SecretKeyRef.Name)
				}
			}
		}
		for _, c := range spec.Containers {
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s: container %s: want readiness and liveness probes", what, c.Name)
			}
			checkContainerConfig(t, m, w, c)
		}
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(w.tmpl.Labels)) {
			t.Errorf("%s: selector does not match its pod labels", what)
		}
		if w.kind == "Deployment" && !slices.ContainsFunc(m.pdbs, func(p *policyv1.PodDisruptionBudget) bool {
			s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			return err == nil && p.Namespace == w.ns && s.Matches(labels.Set(w.tmpl.Labels))
		}) {
			t.Errorf("%s: no PodDisruptionBudget", what)
		}
		if !slices.ContainsFunc(m.netpols, func(p *networkingv1.NetworkPolicy) bool {
			s, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
			return err == nil && p.Namespace == w.ns && s.Matches(labels.Set(w.tmpl.Labels))
		}) {
			t.Errorf("%s: no NetworkPolicy selects its pods", what)
		}
	}
}

// checkContainerConfig decodes the container's megawatch config from its
// ConfigMap strictly, and checks that the files it names are mounted: the
// topology from megawatch-topology, creds and CA from volumes.
func checkContainerConfig(t *testing.T, m *manifests, w workload, c corev1.Container) {
	t.Helper()
	what := w.kind + " " + w.name
	var cfgPath string
	for _, a := range c.Args {
		if p, ok := strings.CutPrefix(a, "--config="); ok {
			cfgPath = p
		}
	}
	if cfgPath == "" {
		t.Errorf("%s: no --config=", what)
		return
	}
	src, ok := m.configByFile[w.ns+"/"+filepath.Base(cfgPath)]
	if !ok {
		t.Errorf("%s: %s is in no ConfigMap of namespace %s", what, cfgPath, w.ns)
		return
	}
	mounted := func(path, wantSource string) {
		t.Helper()
		for _, vm := range c.VolumeMounts {
			if vm.SubPath == "" && strings.HasPrefix(path, strings.TrimRight(vm.MountPath, "/")+"/") {
				for _, v := range w.tmpl.Spec.Volumes {
					if v.Name != vm.Name {
						continue
					}
					src := ""
					switch {
					case v.ConfigMap != nil:
						src = v.ConfigMap.Name
					case v.Secret != nil:
						src = v.Secret.SecretName
					case v.HostPath != nil:
						src = "hostPath"
					}
					if wantSource != "" && src != wantSource {
						t.Errorf("%s: %s comes from %s, want %s", what, path, src, wantSource)
					}
					return
				}
			}
		}
		t.Errorf("%s: %s (named in %s) is not mounted", what, path, cfgPath)
	}
	var topo string
	var natsCreds, natsCA string
	var err error
	switch filepath.Base(cfgPath) {
	case "collector.yaml":
		cfg := collector.DefaultConfig()
		err = config.Decode([]byte(src), cfgPath, &cfg)
		topo, natsCreds, natsCA = cfg.TopologyFile, cfg.NATS.CredsFile, cfg.NATS.TLSCAFile
		if cfg.BufferDir != "" {
			mounted(cfg.BufferDir+"/x", "hostPath")
		}
	case "ingest.yaml":
		cfg := ingest.DefaultConfig()
		err = config.Decode([]byte(src), cfgPath, &cfg)
		topo, natsCreds, natsCA = cfg.TopologyFile, cfg.NATS.CredsFile, cfg.NATS.TLSCAFile
	case "alerts.yaml":
		cfg := alerts.DefaultConfig()
		err = config.Decode([]byte(src), cfgPath, &cfg)
		topo, natsCreds, natsCA = cfg.Topology, cfg.NATS.CredsFile, cfg.NATS.TLSCAFile
		// With the env the Deployment sets (the PagerDuty Secret is
		// optional), alerts pages: it would refuse to start otherwise.
		for _, e := range c.Env {
			if e.Value != "" {
				t.Setenv(e.Name, e.Value)
			}
		}
		t.Setenv("PAGERDUTY_ROUTING_KEY", "")
		paging, perr := cfg.Notifiers.CheckPaging()
		if perr != nil || !slices.ContainsFunc(paging, func(s string) bool { return strings.HasPrefix(s, "alertmanager:") }) {
			t.Errorf("%s: with its env, alerts pages through %q (%v), want the Alertmanagers", what, paging, perr)
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == cfg.Notifiers.PagerDuty.RoutingKeyEnv && e.ValueFrom != nil
		}) {
			t.Errorf("%s: the PagerDuty key variable %q that alerts reads is not injected", what, cfg.Notifiers.PagerDuty.RoutingKeyEnv)
		}
	case "meters.yaml":
		cfg := meters.DefaultConfig()
		err = config.Decode([]byte(src), cfgPath, &cfg)
		topo, natsCreds, natsCA = cfg.TopologyFile, cfg.NATS.CredsFile, cfg.NATS.TLSCAFile
		checkMeterSecrets(t, m, w, c, mounted)
	default:
		t.Errorf("%s: unknown config %s", what, cfgPath)
		return
	}
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	if topo == "" {
		t.Errorf("%s: %s names no topology file (the embedded example would be used)", what, cfgPath)
	} else {
		mounted(topo, "megawatch-topology")
	}
	for _, p := range []string{natsCreds, natsCA} {
		if p != "" {
			mounted(p, "")
		}
	}
	if !bytes.Contains([]byte(src), []byte("tls://")) {
		t.Errorf("%s: NATS without TLS", what)
	}
}

// checkMeterSecrets: every credential the example topology's meters name is
// there for the meters container: a *_env variable injected from a
// Secret, a *_file path mounted from one.
func checkMeterSecrets(t *testing.T, m *manifests, w workload, c corev1.Container, mounted func(path, wantSource string)) {
	t.Helper()
	src, ok := m.configByFile[w.ns+"/topology.yaml"]
	if !ok {
		t.Errorf("%s: no example topology in namespace %s", w.name, w.ns)
		return
	}
	topo, err := topology.Parse([]byte(src), "examples/topology.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(topo.Meters()) == 0 {
		t.Fatalf("the example topology of %s has no meters", w.ns)
	}
	for _, mt := range topo.Meters() {
		if mt.SNMP == nil {
			continue
		}
		for _, s := range []topology.Secret{mt.SNMP.Community, mt.SNMP.AuthPass, mt.SNMP.PrivPass} {
			switch {
			case s.Env != "":
				if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
					return e.Name == s.Env && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
				}) {
					t.Errorf("%s: meter %s reads $%s, which no Secret sets", w.name, mt.Name, s.Env)
				}
			case s.File != "":
				mounted(s.File, "")
			}
		}
	}
}
