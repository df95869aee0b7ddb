package main

import (
	"context"
	"errors"
	"io"
)

// runIngest is a placeholder until its issue lands.
func runIngest(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not implemented yet")
}
