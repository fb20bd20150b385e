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
}

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

	// Get opens the object at key for reading.
	Get(ctx context.Context, key string) (io.ReadCloser, error)

	// Stat describes the object at key.
	Stat(ctx context.Context, key string) (Object, error)

	// List calls fn for every object whose key starts with prefix, recursively,
	// in lexical key order. An error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(Object) error) error

	// Delete removes the object at key. Deleting an absent key is not an error.
	Delete(ctx context.Context, key string) error
}
