package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Window time.Duration `yaml:"window"`
	Name   string        `yaml:"name"`
	Count  int           `yaml:"count"`
}

func (s sample) validate() error {
	var errs []error
	if s.Window <= 0 {
		errs = append(errs, errors.New("window: must be positive"))
	}
	if s.Count > 10 {
		errs = append(errs, errors.New("count: at most 10"))
	}
	return errors.Join(errs...)
}

func write(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadAndValidateReportsEveryProblem(t *testing.T) {
	p := write(t, "window: -1s\ncount: 11\nbogus: 1\nname: [1]\n")
	s := sample{Window: time.Second}
	err := LoadAndValidate(p, &s, func() error { return s.validate() })
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		p + ": line 3: unknown key bogus",
		p + ": line 4: name: a list is not a string",
		p + ": window: must be positive",
		p + ": count: at most 10",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
}

func TestLoadKeepsDefaults(t *testing.T) {
	p := write(t, "name: x\n")
	s := sample{Window: time.Second, Count: 3}
	if err := LoadAndValidate(p, &s, func() error { return s.validate() }); err != nil {
		t.Fatal(err)
	}
	if s.Window != time.Second || s.Count != 3 || s.Name != "x" {
		t.Fatalf("got %+v", s)
	}
	if err := Load(write(t, ""), &s); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	if err := Load(write(t, "name: [\n"), &s); err == nil {
		t.Fatal("syntax error accepted")
	}
}

func TestSecret(t *testing.T) {
	t.Setenv("MW_SECRET_TEST", "tok")
	if v, err := Secret("token", "MW_SECRET_TEST", ""); err != nil || v != "tok" {
		t.Fatalf("env: %q %v", v, err)
	}
	p := write(t, "  filetok\n")
	if v, err := Secret("token", "", p); err != nil || v != "filetok" {
		t.Fatalf("file: %q %v", v, err)
	}
	if _, err := Secret("token", "MW_UNSET_VAR_X", ""); err == nil || !strings.Contains(err.Error(), "MW_UNSET_VAR_X is not set") {
		t.Fatalf("unset: %v", err)
	}
	if _, err := Secret("token", "A", "B"); err == nil {
		t.Fatal("both accepted")
	}
}

func TestCredentialsDirectoryIsExpanded(t *testing.T) {
	type C struct {
		A string `yaml:"a"`
		B string `yaml:"b"`
	}
	t.Setenv(CredentialsVar, "/run/credentials/x.service")
	var c C
	if err := Decode([]byte("a: ${CREDENTIALS_DIRECTORY}/nats.creds\nb: $CREDENTIALS_DIRECTORY/k # $HOME stays\n"), "f.yaml", &c); err != nil {
		t.Fatal(err)
	}
	if c.A != "/run/credentials/x.service/nats.creds" || c.B != "/run/credentials/x.service/k" {
		t.Errorf("got %+v", c)
	}
	t.Setenv(CredentialsVar, "")
	err := Decode([]byte("a: ${CREDENTIALS_DIRECTORY}/nats.creds\n"), "f.yaml", &c)
	if err == nil || !strings.Contains(err.Error(), "f.yaml") || !strings.Contains(err.Error(), "CREDENTIALS_DIRECTORY") {
		t.Errorf("unset variable: %v", err)
	}
	if err := Decode([]byte("a: $HOME\n"), "f.yaml", &c); err != nil || c.A != "$HOME" {
		t.Errorf("other variables must stay: %+v %v", c, err)
	}
}

// Type errors name the key path and what it takes, not Go types.
func TestTypeErrorsNameKeys(t *testing.T) {
	type inner struct {
		Wait time.Duration `yaml:"wait"`
		N    int           `yaml:"n"`
	}
	type outer struct {
		Nats  inner   `yaml:"nats"`
		List  []inner `yaml:"list"`
		Ratio float64 `yaml:"ratio"`
	}
	p := write(t, "nats:\n  wait: soon\n  bogus: 1\nlist:\n  - n: many\nratio: half\n")
	var o outer
	err := LoadAndValidate(p, &o, func() error { return nil })
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		p + ": line 2: nats.wait: `soon` is not a duration",
		p + ": line 3: unknown key nats.bogus",
		p + ": line 5: list[0].n: `many` is not an integer",
		p + ": line 6: ratio: `half` is not a number",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	for _, goName := range []string{"time.Duration", "config.", "float64", "int"} {
		if strings.Contains(msg, goName+" ") || strings.Contains(msg, "type "+goName) {
			t.Errorf("Go type %q in:\n%s", goName, msg)
		}
	}
}

func TestValidateListenAddr(t *testing.T) {
	for _, ok := range []string{"", ":8080", "127.0.0.1:8080", "[::1]:9401", "host.example:0", "0.0.0.0:65535"} {
		if err := ValidateListenAddr("http_addr", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"nonsense", "8080", "host:port", ":99999", "bad_host!:80", "1.2.3.4:-1"} {
		if err := ValidateListenAddr("http_addr", bad); err == nil || !strings.HasPrefix(err.Error(), "http_addr: ") {
			t.Errorf("%q: %v, want an http_addr error", bad, err)
		}
	}
}
