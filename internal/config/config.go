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
	"os"
	"regexp"

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
		for _, e := range te.Errors {
			errs = append(errs, fmt.Errorf("%s: %s", path, e))
		}
	}
	if err := Annotate(path, validate()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
