// Package secret holds credentials and keys read from references such as
// "env:NAME" or "file:PATH", so that configuration, logs, errors and Temporal
// payloads carry only the reference, never the value.
package secret

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Secret is a resolved secret. Its String, GoString, MarshalText and
// MarshalJSON methods show only the reference it was read from.
type Secret struct {
	ref   string
	value string
}

// Resolve reads the secret that ref points to: "env:NAME" (an environment
// variable that must be set and non-empty) or "file:PATH" (a file's contents
// without one trailing newline). Anything else is rejected so that a pasted
// secret value is never accepted inline.
func Resolve(ref string) (Secret, error) {
	kind, arg, ok := strings.Cut(ref, ":")
	if !ok || arg == "" {
		return Secret{}, errors.New(`must be a reference "env:NAME" or "file:PATH", not an inline value`)
	}
	switch kind {
	case "env":
		v, ok := os.LookupEnv(arg)
		if !ok {
			return Secret{}, fmt.Errorf("environment variable %s is not set", arg)
		}
		if v == "" {
			return Secret{}, fmt.Errorf("environment variable %s is empty", arg)
		}
		return Secret{ref: ref, value: v}, nil
	case "file":
		b, err := os.ReadFile(arg)
		if err != nil {
			return Secret{}, fmt.Errorf("read secret file: %w", err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return Secret{}, fmt.Errorf("secret file %s is empty", arg)
		}
		return Secret{ref: ref, value: v}, nil
	default:
		// The text before the colon is not echoed: it may be a pasted secret.
		return Secret{}, errors.New(`unknown secret reference kind: use "env:NAME" or "file:PATH"`)
	}
}

// New returns a secret with the given value, for tests and for values that
// arrive by other means; ref names where it came from.
func New(ref, value string) Secret { return Secret{ref: ref, value: value} }

// Value returns the secret itself. Call it only where the secret is used.
func (s Secret) Value() string { return s.value }

// IsZero reports whether no secret is set.
func (s Secret) IsZero() bool { return s.value == "" }

// Ref returns the reference the secret was read from.
func (s Secret) Ref() string { return s.ref }

func (s Secret) String() string {
	if s.ref == "" {
		return "(secret)"
	}
	return "(secret " + s.ref + ")"
}

func (s Secret) GoString() string              { return s.String() }
func (s Secret) MarshalText() ([]byte, error)  { return []byte(s.String()), nil }
func (s Secret) MarshalJSON() ([]byte, error)  { return []byte(fmt.Sprintf("%q", s.String())), nil }
func (s Secret) Format(f fmt.State, verb rune) { fmt.Fprint(f, s.String()) }
