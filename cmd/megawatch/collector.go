package main

import (
	"context"
	"errors"
	"io"
)

// runCollector is a placeholder until its issue lands.
func runCollector(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not implemented yet")
}
