package repo

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The counter a context carries sees every entry a point's writer takes and
// its readers decode, and every object a listing returns: what a long
// commit or preparation reports as its progress (Progress.Scanned).
func TestCounterSeesEntriesAndListings(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	entries := bigTree(5000, 3)
	var written atomic.Int64
	ctx := WithCounter(context.Background(), &written)
	point := NewPointID(time.Now(), "counted")
	writePointIn(ctx, t, r, point, entries, nil)
	if written.Load() < int64(len(entries)) {
		t.Fatalf("writing %d entries counted %d", len(entries), written.Load())
	}

	var read atomic.Int64
	ctx = WithCounter(context.Background(), &read)
	p, err := r.OpenPoint(ctx, point)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Needs(ctx); err != nil {
		t.Fatal(err)
	}
	if read.Load() != int64(len(entries)) {
		t.Fatalf("reading %d entries counted %d", len(entries), read.Load())
	}

	var listed atomic.Int64
	chunks, err := r.Chunks(WithCounter(context.Background(), &listed))
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) == 0 || listed.Load() < int64(len(chunks)) {
		t.Fatalf("listing %d chunks counted %d", len(chunks), listed.Load())
	}
}
