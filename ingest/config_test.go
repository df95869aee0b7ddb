package ingest

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestExampleConfigIsDefault(t *testing.T) {
	c, err := LoadConfig("../configs/ingest.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); !reflect.DeepEqual(c, d) {
		t.Errorf("configs/ingest.yaml differs from DefaultConfig():\n%+v\n%+v", c, d)
	}
}

func TestConfigErrors(t *testing.T) {
	f := func(yaml string, want ...string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "ingest.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(p)
		if err == nil {
			t.Fatalf("%q: no error", yaml)
		}
		for _, w := range append(want, p) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not mention %q", yaml, err, w)
			}
		}
	}
	f("workers: 0\nbatch_lines: 0\ngzip_level: 11\ngpu_every: 0\n", "workers:", "batch_lines:", "gzip_level:", "gpu_every:")
	f("targets: []\n", "targets:")
	f("targets: [{name: a, url: ftp://x, bucket: b}, {name: a, file: /tmp/x, url: http://y}]\n", "targets[0].url:", "targets[1].name: duplicate", "targets[1].url: set only one")
	f("targets: [{name: a, url: http://x, subjects: ['a.>.b']}]\n", "targets[0].bucket:", "targets[0].subjects[0]:")
	f("meters: {consumer: megawatch_ingest}\n", "meters.consumer:")
	f("meters: {consumer: 'a.b'}\n", "meters.consumer:")
	f("plausible: {meter_max_w: 0}\n", "plausible.meter_max_w:")
	f("targets: [{name: a, url: http://x, bucket: b/c, measurements: {meters: b/d}}]\n", "targets[0].measurements.meters:")
	f("nope: 1\n", "nope")
}

func TestSubjectMatches(t *testing.T) {
	f := func(filter, subject string, want bool) {
		t.Helper()
		if got := subjectMatches(filter, subject); got != want {
			t.Errorf("subjectMatches(%q, %q) = %v", filter, subject, got)
		}
	}
	f("megawatch.v1.power.>", "megawatch.v1.power.dc1.h1.r.k.n", true)
	f("megawatch.v1.power.*.h1.>", "megawatch.v1.power.dc1.h1.r.k.n", true)
	f("megawatch.v1.power.*.h1.>", "megawatch.v1.power.dc1.h2.r.k.n", false)
	f("megawatch.v1.power.*", "megawatch.v1.power.dc1.h1", false)
	f("a.b", "a.b", true)
	f("a.b", "a.b.c", false)
	f("a.*.c", "a.b.c", true)
	f(">", "a", true)
}
