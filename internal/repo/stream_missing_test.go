package repo

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
)

// A lost entry part of a valid point is permanent (MissingChunk): no retry
// brings it back, so restore and transmit fail at once, naming the chunk.
// It does not read as not found, which would say the point is absent (and
// garbage collection would skip it, taking its chunks for unnamed).
func TestPointLostPartIsPermanent(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	point := NewPointID(time.Now(), "l")
	w := writePoint(t, r, point, bigTree(20000, 5), nil)
	parts, _, _ := w.Parts()
	lost := parts[len(parts)-1].ID
	delete(st.objs, r.key(ChunkKey(lost)))
	p, err := r.OpenPoint(ctx, point)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Needs(ctx)
	wantReason(t, err, ReasonMissingChunk)
	if drivers.IsNotFound(err) || !strings.Contains(err.Error(), lost.String()) || !strings.Contains(err.Error(), point) {
		t.Fatalf("a lost part: %v; want it named, with the point, and not as not found", err)
	}
}
