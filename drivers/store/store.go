// Package store defines the object store a site keeps its repositories in.
package store

import (
	"context"
	"io"
	"time"
)

// Object describes one stored object.
type Object struct {
	Key      string // relative to the store's prefix, slash-separated
	Size     int64
	Modified time.Time
	// ETag names the stored version of the object, opaque, for PutIf's
	// IfMatch: it differs between two versions with different contents.
	// Stat, GetObject and PutIf set it; List may leave it empty.
	ETag string
}

// Condition is what must hold of the object at a key for PutIf to store a
// new one there. Exactly one of its fields is set.
type Condition struct {
	// IfMatch is the ETag of the version the caller read: the put replaces
	// that version and no other (compare-and-swap). An absent object fails it.
	IfMatch string
	// IfAbsent creates the object only if there is none at the key.
	IfAbsent bool
}

// IfMatch is the condition that the object is still the version etag.
func IfMatch(etag string) Condition { return Condition{IfMatch: etag} }

// IfAbsent is the condition that no object is at the key.
func IfAbsent() Condition { return Condition{IfAbsent: true} }

// Store is an S3-like object store rooted at a bucket and an optional prefix. Keys
// are relative to that root. Every method is safe for concurrent use. Errors are
// classified as in package drivers: an absent key wraps drivers.ErrNotFound,
// access denied / missing bucket are permanent, the rest transient.
type Store interface {
	// Location names the store for messages and logs, without credentials,
	// e.g. "s3://127.0.0.1:9001/drorch/prefix".
	Location() string

	// Prepare checks that the store answers and accepts writes, and creates the
	// bucket when it is missing. It is idempotent.
	Prepare(ctx context.Context) error

	// Put stores size bytes read from r under key, replacing any object there.
	// The object becomes visible whole or not at all. size may be -1 when unknown.
	Put(ctx context.Context, key string, r io.Reader, size int64) error

	// PutIf stores size bytes read from r under key if cond holds when the
	// store commits the object, atomically with every other write to the key:
	// of several PutIf racing with the same condition, at most one succeeds.
	// A condition that does not hold fails with an error wrapping
	// drivers.ErrPreconditionFailed, and the object stays as it was. size
	// must be known (at least 0). It returns the ETag of the stored version.
	// It is meant for small objects that coordinate writers (the epoch,
	// manifests), not for bulk data.
	PutIf(ctx context.Context, key string, r io.Reader, size int64, cond Condition) (etag string, err error)

	// Get opens the object at key for reading.
	Get(ctx context.Context, key string) (io.ReadCloser, error)

	// GetObject opens the object at key for reading, as Get, and describes
	// the version whose bytes the reader returns, ETag included.
	GetObject(ctx context.Context, key string) (io.ReadCloser, Object, error)

	// Stat describes the object at key, ETag included.
	Stat(ctx context.Context, key string) (Object, error)

	// List calls fn for every object whose key starts with prefix, recursively,
	// in lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Object) error) error

	// Delete removes the object at key. Deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
}
