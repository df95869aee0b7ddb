package nodepower

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// unpackTree writes the files of a txtar-style fixture (testdata/NAME.txtar:
// "-- path --" headers, each followed by the file's content) under a temp
// dir and returns it, like node_exporter's sysfs fixtures.
func unpackTree(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".txtar"))
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	var path string
	var body []string
	flush := func() {
		if path == "" {
			return
		}
		writeFile(t, filepath.Join(root, path), strings.Join(body, "\n")+"\n")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "-- ") && strings.HasSuffix(line, " --") {
			flush()
			path, body = strings.TrimSuffix(strings.TrimPrefix(line, "-- "), " --"), nil
			continue
		}
		if path != "" && line != "" {
			body = append(body, line)
		}
	}
	flush()
	return root
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
