// Package config loads YAML config files strictly (unknown keys are errors)
// and prefixes validation problems with the file they came from.
//
// A file may name systemd's credentials directory as $CREDENTIALS_DIRECTORY
// or ${CREDENTIALS_DIRECTORY} (e.g. creds_file:
// ${CREDENTIALS_DIRECTORY}/nats.creds with LoadCredential=nats.creds:...);
// it is replaced by the variable's value when the file is read, and a file
// that uses it where the variable is unset is an error. No other variable
// is expanded.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load decodes the YAML file at path over dst (which holds the defaults).
// Unknown keys and type errors name the file and line.
func Load(path string, dst any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return Decode(b, path, dst)
}

// CredentialsVar is the one environment variable config files may use.
const CredentialsVar = "CREDENTIALS_DIRECTORY"

var credRef = regexp.MustCompile(`\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY\b`)

// ExpandCredentials replaces $CREDENTIALS_DIRECTORY / ${CREDENTIALS_DIRECTORY}
// in b with the variable's value; source names b in the error when the
// file uses it and the variable is unset (a systemd unit without
// LoadCredential=).
func ExpandCredentials(b []byte, source string) ([]byte, error) {
	if !credRef.Match(b) {
		return b, nil
	}
	dir := os.Getenv(CredentialsVar)
	if dir == "" {
		return nil, fmt.Errorf("%s: uses $%s, which is not set (systemd sets it for units with LoadCredential=)", source, CredentialsVar)
	}
	return credRef.ReplaceAllLiteral(b, []byte(dir)), nil
}

// Decode is Load on bytes; source names them in errors.
func Decode(b []byte, source string, dst any) error {
	b, err := ExpandCredentials(b, source)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: defaults
		}
		return fmt.Errorf("%s: %w", source, err)
	}
	return nil
}

// Annotate prefixes each problem of a (joined) validation error with source.
func Annotate(source string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Annotate(source, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", source, err)
}

// Secret resolves a secret from an env var or a file (exactly one may be
// set). what names the secret in errors; the value itself never appears.
func Secret(what, env, file string) (string, error) {
	switch {
	case env != "" && file != "":
		return "", fmt.Errorf("%s: set only one of the env var and the file", what)
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("%s: env var %s is not set", what, env)
		}
		return v, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return string(bytes.TrimSpace(b)), nil
	}
	return "", nil
}

// LoadAndValidate reads path over dst (which holds the defaults) and runs
// validate, returning every problem at once: unknown keys and type errors
// (each with its line) together with the validation problems (each with its
// key), all prefixed with the file. A file that is not YAML at all stops at
// the syntax error.
func LoadAndValidate(path string, dst any, validate func() error) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if b, err = ExpandCredentials(b, path); err != nil {
		return err
	}
	var errs []error
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fmt.Errorf("%s: %w", path, err)
		}
		paths := keyPaths(b)
		for _, e := range te.Errors {
			errs = append(errs, fmt.Errorf("%s: %s", path, friendly(e, paths)))
		}
	}
	if err := Annotate(path, validate()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidateListenAddr checks a listen address ("host:port", ":port"; ""
// disables the listener) and names key in the problem.
func ValidateListenAddr(key, addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not host:port (e.g. 127.0.0.1:8080 or :8080): %v", key, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s: %q: port %q is not a number 0..65535", key, addr, port)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("%s: %q: %q is neither an IP address nor a host name", key, addr, host)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// keyPaths maps each line of a YAML document to the key path that starts
// there ("nats.servers", "targets[0].url"), for type errors, which name
// only the line.
func keyPaths(b []byte) map[int]string {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil
	}
	out := map[int]string{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				if _, ok := out[n.Content[i].Line]; !ok {
					out[n.Content[i].Line] = p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if _, ok := out[c.Line]; !ok && c.Kind == yaml.ScalarNode {
					out[c.Line] = p
				}
				walk(c, p)
			}
		}
	}
	walk(&doc, "")
	return out
}

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
	badValue     = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: (`.*`))? into (\\S+)$")
)

// friendly rewrites a yaml.v3 type error ("field x not found in type
// collector.Config", "cannot unmarshal !!str `x` into time.Duration") into
// the key and what the key takes, without Go type names.
func friendly(e string, paths map[int]string) string {
	if m := unknownField.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := m[2]
		if p, ok := paths[line]; ok {
			key = p
		}
		return fmt.Sprintf("line %s: unknown key %s", m[1], key)
	}
	if m := badValue.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := paths[line]
		if key == "" {
			key = "value"
		}
		what := m[3]
		if what == "" {
			what = map[string]string{"seq": "a list", "map": "a mapping"}[m[2]]
			if what == "" {
				what = "a " + m[2]
			}
		}
		return fmt.Sprintf("line %s: %s: %s is not %s", m[1], key, what, typeWords(m[4]))
	}
	return e
}

// typeWords says in words what a Go type in a yaml error accepts.
func typeWords(goType string) string {
	t := strings.TrimLeft(goType, "*")
	switch {
	case t == "time.Duration":
		return "a duration (e.g. 500ms, 30s, 1m)"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping of keys to values"
	}
	return "a mapping (a block of keys)"
}

// LoadValidated reads path over defaults and validates the result (LoadAndValidate):
// the LoadConfig of every subcommand's config.
func LoadValidated[C interface{ Validate() error }](path string, defaults C) (C, error) {
	c := defaults
	if err := LoadAndValidate(path, &c, func() error { return c.Validate() }); err != nil {
		var zero C
		return zero, err
	}
	return c, nil
}
