// Package access defines how drorch switches a site's resources between
// read-only and read-write: fencing the old active site in a failover, and
// opening the new one for writes.
package access

import (
	"context"
	"errors"
	"fmt"
)

// Mode is the access mode of a resource.
type Mode string

const (
	ReadOnly  Mode = "read-only"
	ReadWrite Mode = "read-write"
)

// ParseMode accepts "read-only" and "read-write".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ReadOnly, ReadWrite:
		return Mode(s), nil
	}
	return "", fmt.Errorf("access mode %q: want %q or %q", s, ReadOnly, ReadWrite)
}

// ErrPartial is wrapped by a Status error for a resource that is neither
// wholly read-only nor wholly read-write: a fence applied or lifted part-way
// (a driver that fences in several moves was interrupted, or someone undid one
// of them). Such a resource is not fenced; setting either mode again
// completes it.
var ErrPartial = errors.New("partly read-only")

// Access switches one resource (a database, a bucket, anything a command or a
// webhook can switch). Errors are classified as in package drivers; a
// resource that cannot be reached at all wraps drivers.ErrUnreachable, so an
// unplanned failover can record "not fenced" and go on.
type Access interface {
	// Describe names the resource for messages and reports, without
	// secrets, e.g. "postgres 127.0.0.1:5432/app".
	Describe() string

	// SetMode puts the resource in mode and returns once the mode is in
	// force (for a database: new sessions and open ones alike). It is
	// idempotent: setting the mode the resource already has is a no-op.
	SetMode(ctx context.Context, mode Mode) error

	// Status reports the mode in force.
	Status(ctx context.Context) (Mode, error)
}
