package main

import (
	"context"
	"errors"
	"io"
)

// runLoadgen is a placeholder until its issue lands.
func runLoadgen(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("not implemented yet")
}
