// Package configs embeds the example configuration files, which are equal
// to the built-in defaults, so that `megawatch demo` runs with nothing but
// the binary. Tests load every file here so that the examples cannot rot.
package configs

import "embed"

// FS holds every YAML file of this directory and its subdirectories that
// the binary needs at run time.
//
//go:embed *.yaml
var FS embed.FS
