package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// memStore is an in-memory store.Store for tests of the format's logic.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

var _ store.Store = (*memStore)(nil)

func newMemStore() *memStore { return &memStore{objs: make(map[string][]byte)} }

func (s *memStore) Location() string                  { return "mem://test" }
func (s *memStore) Prepare(ctx context.Context) error { return nil }

func (s *memStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if size >= 0 && int64(len(b)) != size {
		return fmt.Errorf("put %s: read %d bytes, expected %d", key, len(b), size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = b
	return nil
}

// PutIf is Put under the store's lock, with S3's conditions; the ETag is a
// digest of the content, as S3's is for a single-part upload.
func (s *memStore) PutIf(ctx context.Context, key string, r io.Reader, size int64, cond store.Condition) (string, error) {
	if cond.IfAbsent == (cond.IfMatch != "") || size < 0 {
		return "", drivers.Permanentf(drivers.ReasonInvalidInput, "put %s: bad condition %+v or size %d", key, cond, size)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if int64(len(b)) != size {
		return "", fmt.Errorf("put %s: read %d bytes, expected %d", key, len(b), size)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.objs[key]
	if cond.IfAbsent && ok || cond.IfMatch != "" && (!ok || etagOf(old) != cond.IfMatch) {
		return "", fmt.Errorf("put %s: %w", key, drivers.ErrPreconditionFailed)
	}
	s.objs[key] = b
	return etagOf(b), nil
}

func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

func (s *memStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, _, err := s.GetObject(ctx, key)
	return rc, err
}

func (s *memStore) GetObject(ctx context.Context, key string) (io.ReadCloser, store.Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	if !ok {
		return nil, store.Object{}, fmt.Errorf("get %s: %w", key, drivers.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(bytes.Clone(b))), store.Object{Key: key, Size: int64(len(b)), ETag: etagOf(b)}, nil
}

func (s *memStore) Stat(ctx context.Context, key string) (store.Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	if !ok {
		return store.Object{}, fmt.Errorf("stat %s: %w", key, drivers.ErrNotFound)
	}
	return store.Object{Key: key, Size: int64(len(b)), Modified: time.Unix(0, 0), ETag: etagOf(b)}, nil
}

func (s *memStore) List(ctx context.Context, prefix string, fn func(store.Object) error) error {
	s.mu.Lock()
	var objs []store.Object
	for k, b := range s.objs {
		if strings.HasPrefix(k, prefix) {
			objs = append(objs, store.Object{Key: k, Size: int64(len(b))})
		}
	}
	s.mu.Unlock()
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	for _, o := range objs {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.objs, key)
	return nil
}

// raw returns the object at key, for tests that damage or move objects.
func (s *memStore) raw(key string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.objs[key]
}

func (s *memStore) set(key string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = b
}
