package main

import (
	"context"
	"errors"
	"io"
)

// runCheckConfig is a placeholder until its issue lands.
func runCheckConfig(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not implemented yet")
}
