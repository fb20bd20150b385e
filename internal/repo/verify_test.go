package repo

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// TestVerifyChunkBody: the check transmit makes before copying a body
// accepts what SealChunk wrote, and refuses, as Corrupt, any changed byte, a
// body under another chunk's id, a cut-short body and (without a key) a body
// whose content is not its id's.
func TestVerifyChunkBody(t *testing.T) {
	for _, key := range [][]byte{testKey, nil} {
		r, _ := newTestRepo(t, key)
		plain := append(randomBytes(3, 300<<10), textBytes(4, 300<<10)...)
		id := Hash(plain)
		body, err := r.SealChunk(id, plain)
		if err != nil {
			t.Fatal(err)
		}
		orig := bytes.Clone(body)
		if err := r.VerifyChunkBody(id, body); err != nil {
			t.Fatalf("key %v: intact body: %v", key != nil, err)
		}
		if !bytes.Equal(body, orig) {
			t.Fatal("VerifyChunkBody modified the body")
		}
		for _, at := range []int{0, 5, 12, len(body) / 2, len(body) - 1} {
			bad := bytes.Clone(body)
			bad[at] ^= 0x10
			if err := r.VerifyChunkBody(id, bad); err == nil {
				t.Errorf("key %v: byte %d flipped: no error", key != nil, at)
			} else {
				wantReason(t, err, drivers.ReasonCorrupt)
			}
		}
		other := Hash([]byte("another chunk"))
		err = r.VerifyChunkBody(other, body)
		wantReason(t, err, drivers.ReasonCorrupt)
		if !strings.Contains(err.Error(), other.String()) {
			t.Errorf("error %q does not name the chunk", err)
		}
		wantReason(t, r.VerifyChunkBody(id, body[:len(body)/2]), drivers.ReasonCorrupt)
		wantReason(t, r.VerifyChunkBody(id, body[:3]), drivers.ReasonCorrupt)
	}
}

// shortStore announces an object's size but its body ends early or runs
// long, as a broken connection or a confused server might.
type shortStore struct {
	*memStore
	delta int64
}

func (s shortStore) GetObject(ctx context.Context, key string) (io.ReadCloser, store.Object, error) {
	rc, o, err := s.memStore.GetObject(ctx, key)
	o.Size += s.delta
	return rc, o, err
}

// TestGetChecksAnnouncedSize: a body shorter or longer than the size the
// store announced is an error (not a chunk), and not a permanent one: the
// next attempt reads it again.
func TestGetChecksAnnouncedSize(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, testKey)
	plain := randomBytes(5, 100<<10)
	id := Hash(plain)
	if _, err := r.PutChunk(ctx, id, plain); err != nil {
		t.Fatal(err)
	}
	for _, delta := range []int64{+1, -1} {
		rs, err := New(shortStore{st, delta}, "web", testKey)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rs.GetChunk(ctx, id)
		if err == nil {
			t.Fatalf("announced size off by %d: no error", delta)
		}
		if _, perm := drivers.IsPermanent(err); perm {
			t.Errorf("announced size off by %d: permanent error %v", delta, err)
		}
	}
	got, err := r.GetChunk(ctx, id)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("GetChunk: %v, equal %v", err, bytes.Equal(got, plain))
	}
}
