// Package k8s_test parses every YAML and JSON file of the deployment
// examples (configs/k8s, configs/grafana, configs/alertmanager,
// configs/nats) and checks the Kubernetes objects and the megawatch configs
// inside the ConfigMap against the real Config types.
package k8s_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/megawatch/megawatch/alerts"
	"github.com/megawatch/megawatch/collector"
	"github.com/megawatch/megawatch/ingest"
	"github.com/megawatch/megawatch/internal/config"
	"github.com/megawatch/megawatch/internal/topology"
	"github.com/megawatch/megawatch/meters"
)

// TestDeployFilesParse parses every YAML and JSON file under configs/k8s,
// configs/grafana, configs/alertmanager and configs/nats; Kubernetes
// objects need apiVersion, kind, metadata.name (and a namespace), and the
// megawatch configs in the ConfigMap must decode strictly into the real
// Config types and topology, so the examples cannot rot.
func TestDeployFilesParse(t *testing.T) {
	n := 0
	for _, dir := range []string{".", "../grafana", "../alertmanager", "../nats"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			switch filepath.Ext(path) {
			case ".json":
				var v any
				if err := json.Unmarshal(b, &v); err != nil {
					t.Errorf("%s: %v", path, err)
				}
			case ".yaml", ".yml":
				dec := yaml.NewDecoder(bytes.NewReader(b))
				for i := 0; ; i++ {
					var doc map[string]any
					err := dec.Decode(&doc)
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Errorf("%s: document %d: %v", path, i, err)
						break
					}
					if dir == "." {
						checkK8sObject(t, fmt.Sprintf("%s#%d", path, i), doc)
					}
				}
			default:
				return nil
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 10 {
		t.Errorf("only %d YAML/JSON files found", n)
	}
}

func checkK8sObject(t *testing.T, where string, doc map[string]any) {
	t.Helper()
	meta, _ := doc["metadata"].(map[string]any)
	if doc["apiVersion"] == nil || doc["kind"] == nil || meta == nil || meta["name"] == nil {
		t.Errorf("%s: not a Kubernetes object (apiVersion, kind, metadata.name)", where)
		return
	}
	if ns := meta["namespace"]; doc["kind"] != "Namespace" && ns != "megawatch" && ns != "megawatch-collector" {
		t.Errorf("%s: %s %v not in namespace megawatch or megawatch-collector", where, doc["kind"], meta["name"])
	}
	if doc["kind"] != "ConfigMap" {
		return
	}
	data, _ := doc["data"].(map[string]any)
	for key, v := range data {
		s, _ := v.(string)
		var err error
		switch key {
		case "collector.yaml":
			c := collector.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "ingest.yaml":
			c := ingest.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "alerts.yaml":
			c := alerts.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "meters.yaml":
			c := meters.DefaultConfig()
			err = config.Decode([]byte(s), where+" "+key, &c)
		case "topology.yaml":
			_, err = topology.Parse([]byte(s), where+" "+key)
		default:
			err = fmt.Errorf("%s: unknown key %q", where, key)
		}
		if err != nil {
			t.Error(err) // names the file, document and key
		}
	}
}
