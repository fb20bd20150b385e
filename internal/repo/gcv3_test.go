package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
)

// Regression tests from the review of format v3.

// TestGCStopsOnAPointWithAMissingPart: a point whose entry part is lost
// is not a forgotten point: garbage collection stops, saying so, and
// deletes none of the chunks its other parts name.
func TestGCStopsOnAPointWithAMissingPart(t *testing.T) {
	gcMargin(t, 0)
	r, st := newTestRepo(t, nil)
	ids := putChunks(t, r, "data-of-point")
	p1 := NewPointID(time.Now(), "a")
	commitNaming(t, r, p1, ids[0])
	p, err := r.openPoint(context.Background(), p1)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(context.Background(), r.key(ChunkKey(p.Parts[0].ID))); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, err := r.CollectGarbage(context.Background(), GCOptions{})
		if err == nil || !strings.Contains(err.Error(), "nothing deleted") || !strings.Contains(err.Error(), p1) {
			t.Fatalf("garbage collection over a point with a lost part: %v", err)
		}
	}
	if !present(t, r, ids[0]) {
		t.Fatalf("GC deleted the data chunk of point %s whose entry part is missing (it skipped the point as if forgotten)", p1)
	}
}

// TestGCReadsGroupsOfALongLine: the chunk id whose hex a part cut splits
// belongs to the pair of parts, not to either: a point whose long line
// joins the start of one point's and the end of another's names a chunk
// neither names, though each of its parts was seen in them.
func TestGCReadsGroupsOfALongLine(t *testing.T) {
	imgName := ""
	gcMargin(t, 0)
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	const n = 60000
	mk := func(tag string) []ID {
		ids := make([]ID, n)
		for i := range ids {
			ids[i] = Hash([]byte(fmt.Sprintf("%s%d", tag, i)))
		}
		return ids
	}
	a, b := mk("a"), mk("b")
	commitRefs := func(point string, ids []ID) {
		m := pointManifest(r, point, 0)
		refs := make([]Ref, len(ids))
		for i, id := range ids {
			refs[i] = Ref{ID: id, Size: 1}
		}
		m.Entries = append(m.Entries, Entry{Path: imgName, Type: source.TypeFile, Mode: 0o644, Size: n, Chunks: refs})
		m.ComputeTotals()
		if err := r.CommitPoint(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	var k, j int
	for pad := 0; pad < 100; pad++ {
		imgName = "img" + strings.Repeat("x", pad)
		// Where does the 4 MiB boundary fall in the line? Encode A's line.
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		var rs []refOut
		refsA := make([]Ref, n)
		for i := range a {
			refsA[i] = Ref{ID: a[i], Size: 1}
		}
		e := Entry{Path: imgName, Type: source.TypeFile, Mode: 0o644, Size: n, Chunks: refsA}
		if err := encodeEntry(enc, &e, &rs); err != nil {
			t.Fatal(err)
		}
		line := buf.Bytes()
		if len(line) <= entryPartMax {
			t.Fatalf("line %d bytes", len(line))
		}
		// find the ref straddling entryPartMax
		k = -1
		from := 0
		for i := range a {
			h := []byte(a[i].String())
			at := from + bytes.Index(line[from:], h)
			from = at + 64
			if at < entryPartMax && at+64 > entryPartMax {
				k, j = i, entryPartMax-at
				break
			}
		}
		if k < 0 {
			continue
		}
		if k >= 0 && j > 2 && j < 30 {
			break
		}
	}
	combo, err := ParseID(a[k].String()[:j] + b[k].String()[j:])
	if err != nil {
		t.Fatal(err)
	}
	c := append(append(append([]ID{}, a[:k]...), combo), b[k+1:]...)
	for _, id := range []ID{combo} {
		if err := st.Put(ctx, r.key(ChunkKey(id)), bytes.NewReader([]byte("x")), 1); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	commitRefs(NewPointID(now, "a"), a)
	commitRefs(NewPointID(now.Add(time.Second), "b"), b)
	pc := NewPointID(now.Add(2*time.Second), "c")
	commitRefs(pc, c)
	for range 2 {
		if _, err := r.CollectGarbage(ctx, GCOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if !present(t, r, combo) {
		t.Fatalf("GC deleted chunk %s named only by point %s (its long line's parts were each seen in other points)", combo, pc)
	}
}
