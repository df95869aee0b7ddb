package main

import (
	"context"
	"errors"
	"io"
)

// runDemo is a placeholder until its issue lands.
func runDemo(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not implemented yet")
}
