// Package drivers holds what every driver kind shares: the error classes that let
// activities tell a retry that may help from one that never will.
//
// Drivers return errors in three classes:
//   - not found: errors.Is(err, ErrNotFound) — the object, record or file is absent;
//   - permanent: IsPermanent(err) — retrying cannot help (access denied, no such
//     bucket, corrupt data, invalid input, fenced by a newer epoch);
//   - transient: everything else — a timeout, a refused connection, a 5xx.
//
// Activities turn permanent errors into non-retryable Temporal errors; transient
// ones are left to Temporal's retry policy.
package drivers

import (
	"errors"
	"fmt"
)

// ErrNotFound is wrapped by errors that report an absent object.
var ErrNotFound = errors.New("not found")

// ErrUnreachable is wrapped by transient errors that report a server that
// could not be reached at all (connection refused, no route, timeout while
// connecting): an unplanned failover records such a site as not fenced.
var ErrUnreachable = errors.New("unreachable")

// ErrPreconditionFailed is wrapped by errors of a conditional write whose
// condition did not hold (the object changed since it was read, or exists
// when it was to be created). It is neither permanent nor a fault: the
// caller reads again and decides anew.
var ErrPreconditionFailed = errors.New("precondition failed")

// Reasons for permanent errors, used as the Temporal application error type so
// that a history shows why a step gave up.
const (
	ReasonAccessDenied  = "AccessDenied"
	ReasonNoSuchBucket  = "NoSuchBucket"
	ReasonInvalidConfig = "InvalidConfig"
	ReasonInvalidInput  = "InvalidInput"
	ReasonCorrupt       = "Corrupt"
	ReasonFenced        = "Fenced"
	ReasonSourceChanged = "SourceChanged"
	ReasonNotFound      = "NotFound"
	ReasonAuth          = "AuthFailed" // a password or TSIG key was refused
	ReasonConflict      = "Conflict"   // the store holds something else under the name
)

// PermanentError marks an error that no retry can fix.
type PermanentError struct {
	Reason string // one of the Reason constants, or a driver-specific code
	Err    error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent with the given reason. A nil err stays nil.
func Permanent(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Reason: reason, Err: err}
}

// Permanentf is Permanent with a formatted error.
func Permanentf(reason, format string, args ...any) error {
	return &PermanentError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// IsPermanent reports whether err (or an error it wraps) is permanent, and why.
func IsPermanent(err error) (reason string, ok bool) {
	var p *PermanentError
	if errors.As(err, &p) {
		return p.Reason, true
	}
	return "", false
}

// IsUnreachable reports whether err reports a server that could not be reached.
func IsUnreachable(err error) bool { return errors.Is(err, ErrUnreachable) }

// IsPreconditionFailed reports whether err reports a conditional write whose
// condition did not hold.
func IsPreconditionFailed(err error) bool { return errors.Is(err, ErrPreconditionFailed) }

// IsNotFound reports whether err reports an absent object.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
