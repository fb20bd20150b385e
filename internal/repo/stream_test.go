package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

func TestCompareTreePaths(t *testing.T) {
	// The order of a depth-first walk that sorts each directory's names.
	walk := []string{".", "a", "a/b", "a/b/c", "a/b0", "a.c", "a0", "b", "b/\xff", "b\x01", "é"}
	got := slices.Clone(walk)
	rand.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
	slices.SortFunc(got, CompareTreePaths)
	if !slices.Equal(got, walk) {
		t.Fatalf("sorted %q, want %q", got, walk)
	}
}

// bigTree returns the entries of a tree of about n entries in tree order:
// nested directories, odd names (not UTF-8, spaces, quotes), files whose
// chunks are few, and one file whose chunk list makes a line longer than a
// part.
func bigTree(n int, seed uint64) []Entry {
	rng := rand.New(rand.NewPCG(seed, 1))
	mt := time.Date(2026, 11, 30, 12, 0, 0, 123, time.UTC)
	var out []Entry
	out = append(out, Entry{Path: ".", Type: source.TypeDir, Mode: 0o755, ModTime: mt})
	var dir func(path string, depth int)
	dir = func(path string, depth int) {
		names := []string{}
		for i := 0; i < 40 && len(out) < n; i++ {
			names = append(names, fmt.Sprintf("f %d \"x\"\xff%d", rng.IntN(1000), i))
		}
		slices.Sort(names)
		names = slices.Compact(names)
		join := func(name string) string {
			if path == "." {
				return name
			}
			return path + "/" + name
		}
		for _, name := range names {
			if len(out) >= n {
				return
			}
			id := Hash([]byte(name))
			out = append(out, Entry{Path: join(name), Type: source.TypeFile, Mode: 0o644, ModTime: mt, Size: 10, Chunks: []Ref{{ID: id, Size: 10}}})
		}
		if depth < 4 {
			for i := 0; i < 5 && len(out) < n; i++ {
				d := join(fmt.Sprintf("sub%d", i))
				out = append(out, Entry{Path: d, Type: source.TypeDir, Mode: 0o755, ModTime: mt})
				dir(d, depth+1)
			}
		}
	}
	for len(out) < n {
		top := fmt.Sprintf("top%05d", len(out))
		out = append(out, Entry{Path: top, Type: source.TypeDir, Mode: 0o755, ModTime: mt})
		dir(top, 0)
	}
	slices.SortStableFunc(out, func(a, b Entry) int { return CompareTreePaths(a.Path, b.Path) })
	return out
}

// huge returns a file whose line is longer than a part: 52,000 chunk refs
// of 85 bytes.
func huge(path string) Entry {
	e := Entry{Path: path, Type: source.TypeFile, Mode: 0o600, ModTime: time.Unix(1, 0).UTC()}
	for i := range 52000 {
		e.Chunks = append(e.Chunks, Ref{ID: Hash([]byte(fmt.Sprint(i))), Size: 1})
		e.Size++
	}
	return e
}

func writePoint(t *testing.T, r *Repo, point string, entries []Entry, known func(ID) bool) *PointWriter {
	t.Helper()
	return writePointIn(context.Background(), t, r, point, entries, known)
}

// writePointIn is writePoint in ctx.
func writePointIn(ctx context.Context, t *testing.T, r *Repo, point string, entries []Entry, known func(ID) bool) *PointWriter {
	t.Helper()
	w, err := r.NewPointWriter(ctx, r.NewManifest(point, "dc1", "dir", time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), 0), known)
	if err != nil {
		t.Fatal(err)
	}
	for i := range entries {
		if err := w.Add(ctx, &entries[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestPointWriterAndReader(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, KeySize)} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			ctx := context.Background()
			r, _ := newTestRepo(t, key)
			entries := bigTree(15000, 1)
			// A line longer than a part, in the middle of the tree
			// (without a key only: it is slow to check under -race).
			mid := len(entries) / 2
			if key == nil {
				entries = slices.Insert(entries, mid, huge(entries[mid-1].Path+" huge"))
				slices.SortStableFunc(entries, func(a, b Entry) int { return CompareTreePaths(a.Path, b.Path) })
			}
			point := NewPointID(time.Now(), "big")
			w := writePoint(t, r, point, entries, nil)
			parts, uploaded, _ := w.Parts()
			if len(parts) < 4 || uploaded != int64(len(parts)) {
				t.Fatalf("%d parts, %d uploaded: want several, all uploaded", len(parts), uploaded)
			}
			continuation := 0
			for _, part := range parts {
				if part.Count == 0 {
					continuation++
				}
			}
			if continuation == 0 && key == nil {
				t.Fatal("the long line was not split over parts")
			}

			p, err := r.OpenPoint(ctx, point)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Chunked() || p.Meta.Totals.Entries != int64(len(entries)) {
				t.Fatalf("version %d, totals %+v", p.Meta.Version, p.Meta.Totals)
			}
			m, err := p.Manifest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Entries, entries) {
				t.Fatal("the entries read back differ")
			}
			// From any index on, as a resumed restore reads them.
			for _, from := range []int64{1, int64(mid) + 1, int64(len(entries) - 1), int64(len(entries))} {
				var got []Entry
				err := p.Entries(ctx, from, func(i int64, e *Entry) error {
					if i != from+int64(len(got)) {
						return fmt.Errorf("index %d after %d entries from %d", i, len(got), from)
					}
					got = append(got, *e)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, entries[from:]) && !(len(got) == 0 && int(from) == len(entries)) {
					t.Fatalf("from %d: %d entries differ", from, len(got))
				}
			}
			// Find every path, in order and not, and some absent ones.
			c := p.Cursor()
			order := make([]int, len(entries))
			for i := range order {
				order[i] = i
			}
			for _, i := range append(order, append(rand.Perm(len(entries))[:20], 0, mid, len(entries)-1)...) {
				if i%5 != 0 && i != mid && i != len(entries)-1 {
					continue
				}
				got, err := c.Find(ctx, entries[i].Path)
				if err != nil || got == nil || !reflect.DeepEqual(*got, entries[i]) {
					t.Fatalf("find %q: %v %v", entries[i].Path, got, err)
				}
				if got, err := c.Find(ctx, entries[i].Path+"\x01absent"); err != nil || got != nil {
					t.Fatalf("find an absent path: %v %v", got, err)
				}
			}
			needs, err := p.Needs(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(needs) != len(parts)+int(m.Totals.UniqueChunks) {
				t.Fatalf("%d needs, want %d parts and %d chunks", len(needs), len(parts), m.Totals.UniqueChunks)
			}
		})
	}
}

// TestPointPartsDedup: the parts of an unchanged stretch of a tree are the
// same from one point to the next, so a backup that changed one file
// stores a few parts, not all.
func TestPointPartsDedup(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, nil)
	entries := bigTree(40000, 2)
	w1 := writePoint(t, r, NewPointID(time.Now(), "a"), entries, nil)
	parts1, _, _ := w1.Parts()
	have, err := r.Chunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	changed := slices.Clone(entries)
	for i := range changed {
		if changed[i].Type == source.TypeFile && i > len(changed)/2 {
			changed[i].ModTime = changed[i].ModTime.Add(time.Second)
			break
		}
	}
	known := func(id ID) bool { _, ok := have[id]; return ok }
	w2 := writePoint(t, r, NewPointID(time.Now().Add(time.Second), "b"), changed, known)
	parts2, uploaded, _ := w2.Parts()
	if len(parts1) < 5 || uploaded > 2 {
		t.Fatalf("%d parts, then %d of %d uploaded after one change: want at most 2", len(parts1), uploaded, len(parts2))
	}
}

func TestPointWriterRefuses(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, nil)
	mt := time.Unix(0, 0).UTC()
	root := Entry{Path: ".", Type: source.TypeDir, Mode: 0o755, ModTime: mt}
	dir := func(p string) Entry { return Entry{Path: p, Type: source.TypeDir, Mode: 0o755, ModTime: mt} }
	file := func(p string) Entry { return Entry{Path: p, Type: source.TypeFile, Mode: 0o644, ModTime: mt} }
	for _, c := range []struct {
		name     string
		entries  []Entry
		want     string
		unsorted bool
	}{
		{"no root", []Entry{dir("a")}, `the first entry must be the root "."`, false},
		{"unsorted", []Entry{root, dir("b"), dir("a")}, `entry 2 ("a"): entries are not in tree order: it comes after "b"`, true},
		{"duplicate", []Entry{root, dir("a"), file("a")}, `entry 2 ("a"): duplicate path`, false},
		{"no parent", []Entry{root, file("a/b")}, `parent "a" is not a directory that comes before it`, false},
		{"parent a file", []Entry{root, file("a"), file("a/b")}, `parent "a" is not a directory that comes before it`, false},
		{"a dir's sibling's child", []Entry{root, dir("a"), dir("a/b"), file("a/b/x"), file("a/b2/x")}, `parent "a/b2" is not a directory`, false},
		{"dot dot", []Entry{root, file("..")}, `".." component`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, err := r.NewPointWriter(ctx, r.NewManifest(NewPointID(time.Now(), "x"), "dc1", "dir", mt, 0), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range c.entries {
				if err = w.Add(ctx, &c.entries[i]); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
			if errors.Is(err, ErrUnsorted) != c.unsorted {
				t.Fatalf("ErrUnsorted %v, want %v", errors.Is(err, ErrUnsorted), c.unsorted)
			}
			if _, perm := drivers.IsPermanent(err); perm == c.unsorted {
				t.Fatalf("permanent %v for %v", perm, err)
			}
		})
	}
	// CommitPoint sorts what it is given.
	m := r.NewManifest(NewPointID(time.Now(), "sorted"), "dc1", "dir", mt, 0)
	m.Entries = []Entry{root, dir("b"), file("b/x"), dir("a"), file("a.c"), file("a/y")}
	m.ComputeTotals()
	if err := r.CommitPoint(ctx, m, nil); err != nil {
		t.Fatal(err)
	}
	got, err := r.GetManifest(ctx, m.Point)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range got.Entries {
		paths = append(paths, e.Path)
	}
	if want := []string{".", "a", "a/y", "a.c", "b", "b/x"}; !slices.Equal(paths, want) {
		t.Fatalf("stored %q, want %q", paths, want)
	}
}

// TestPointCorruptPart: a part that was replaced, emptied or lost makes
// every reader fail with an error naming the point, never read less.
func TestPointCorruptPart(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	entries := bigTree(20000, 3)
	point := NewPointID(time.Now(), "c")
	w := writePoint(t, r, point, entries, nil)
	parts, _, _ := w.Parts()
	victim := parts[len(parts)/2]
	key := r.key(ChunkKey(victim.ID))
	// Another part's body under this one's name: it opens, but its hash
	// is not its id.
	st.objs[key] = st.objs[r.key(ChunkKey(parts[0].ID))]
	p, err := r.OpenPoint(ctx, point)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = p.Entries(ctx, 0, func(int64, *Entry) error { n++; return nil })
	wantReason(t, err, drivers.ReasonCorrupt)
	if !strings.Contains(err.Error(), point) {
		t.Fatalf("error does not name the point: %v", err)
	}
	delete(st.objs, key)
	err = p.Entries(ctx, 0, func(int64, *Entry) error { return nil })
	wantReason(t, err, ReasonMissingChunk)
	if drivers.IsNotFound(err) || !strings.Contains(err.Error(), point) {
		t.Fatalf("a lost part: %v", err)
	}
	var set idSet
	if err := r.scanPoint(ctx, manifestKey(point), point, &set); err == nil {
		t.Fatal("garbage collection scanned a point with a lost part")
	}
}

// TestGCScansSharedPartsOnce: a chunk named only in a part that two points
// share is kept, and a part another point dropped is read.
func TestGCScansSharedParts(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	entries := bigTree(20000, 4)
	ids := putChunks(t, r, "named-late")
	entries = append(entries, Entry{Path: "zz", Type: source.TypeFile, Mode: 0o644, Size: 1, Chunks: []Ref{{ID: ids[0], Size: 1}}})
	writePoint(t, r, NewPointID(time.Now(), "a"), entries, nil)
	writePoint(t, r, NewPointID(time.Now().Add(time.Second), "b"), entries, nil)
	for range 2 {
		if res := gc(t, r, GCOptions{}); res.Deleted != 0 {
			t.Fatalf("deleted %d chunks all named", res.Deleted)
		}
	}
	if !present(t, r, ids[0]) {
		t.Fatal("a chunk named in a shared part was deleted")
	}
}

// TestCommitChecksParts: a part gone between its upload and the commit
// (garbage collection took it for unnamed) fails the commit; the point is
// not made valid without it.
func TestCommitChecksParts(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	m := pointManifest(r, NewPointID(time.Now(), "p"), 0)
	w, err := r.writeManifest(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	parts, _, _ := w.Parts()
	delete(st.objs, r.key(ChunkKey(parts[0].ID)))
	wantReason(t, w.Commit(ctx, nil), ReasonMissingChunk)
	if has, _ := r.HasManifest(ctx, m.Point); has {
		t.Fatal("a point whose entries are gone was committed")
	}
}

// TestDecodePointRejects: a point object that departs from the format is
// refused, naming the line, before any part is read.
func TestDecodePointRejects(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	m := r.NewManifest(NewPointID(time.Unix(1e9, 0), "x"), "dc1", "dir", time.Unix(1e9, 0), 0)
	m.Totals = Totals{Entries: 5, Dirs: 1, Files: 4}
	id := Hash([]byte("part"))
	good := []EntryPart{{ID: id, Size: 100, Count: 3, First: "."}, {ID: id, Size: 100, Count: 0}, {ID: id, Size: 50, Count: 2, First: "b\xff"}}
	if _, err := decodePoint(mustEncodePoint(t, m, good)); err != nil {
		t.Fatalf("a good point object: %v", err)
	}
	for _, c := range []struct {
		name  string
		parts []EntryPart
		want  string
	}{
		{"counts", []EntryPart{good[0], good[2], {ID: id, Size: 1, Count: 1, First: "c"}}, "the parts hold 6 entries, the totals say 5"},
		{"no root", []EntryPart{{ID: id, Size: 100, Count: 5, First: "a"}}, `the first part must begin with the root "."`},
		{"unsorted", []EntryPart{good[0], {ID: id, Size: 9, Count: 1, First: "b"}, {ID: id, Size: 9, Count: 1, First: "a"}}, `its first entry "a" does not come after the previous part's first "b"`},
		{"too big", []EntryPart{{ID: id, Size: ChunkMax + 1, Count: 5, First: "."}}, "size 4194305 is not within 1 to 4194304"},
		{"first without entries", []EntryPart{good[0], {ID: id, Size: 9, Count: 0, First: "z"}, {ID: id, Size: 9, Count: 2, First: "zz"}}, `"first" names the first entry of a part with entries, and only then`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodePoint(mustEncodePoint(t, m, c.parts))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
	b := mustEncodePoint(t, m, good)
	b = bytes.Replace(b, []byte(`"count":3`), []byte(`"count":2`), 1)
	if _, err := decodePoint(b); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("a changed count: %v", err)
	}
}

func mustEncodePoint(t *testing.T, m *Manifest, parts []EntryPart) []byte {
	t.Helper()
	b, err := encodePointObject(m, parts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommitFencesOutOlderDrorch: the first v3 commit writes "format":3
// into epoch.json, a member an older drorch refuses (its garbage
// collection would delete the chunks of v3 points, reading no parts); an
// epoch.json of a format newer than this drorch knows is refused here.
func TestCommitFencesOutOlderDrorch(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	if err := r.CommitPoint(ctx, pointManifest(r, NewPointID(time.Now(), "f"), 0), nil); err != nil {
		t.Fatal(err)
	}
	e, err := r.GetEpoch(ctx)
	if err != nil || e.Format != ManifestVersionChunked {
		t.Fatalf("epoch after a v3 commit: format %d, %v", e.Format, err)
	}
	stored := st.objs[r.key(epochKey)]
	member := regexp.MustCompile(`"format": ?3\b`)
	if !member.Match(stored) {
		t.Fatalf("epoch.json does not say the format: %s", stored)
	}
	st.objs[r.key(epochKey)] = member.ReplaceAll(stored, []byte(`"format": 4`))
	if _, err := r.GetEpoch(ctx); err == nil || !strings.Contains(err.Error(), "newer drorch") {
		t.Fatalf("an epoch.json of format 4: %v", err)
	}
}

// TestCommitPointChecksItsParts: CommitPoint checks the parts it wrote
// after the caller's check, which covers only the chunks m names: a part
// gone meanwhile fails the commit.
func TestCommitPointChecksItsParts(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	m := pointManifest(r, NewPointID(time.Now(), "q"), 0)
	err := r.CommitPoint(ctx, m, func(context.Context) error {
		for k := range st.objs {
			if strings.Contains(k, "/chunks/") {
				delete(st.objs, k) // garbage collection, racing the commit
			}
		}
		return nil
	})
	wantReason(t, err, ReasonMissingChunk)
	if has, _ := r.HasManifest(ctx, m.Point); has {
		t.Fatal("a point whose entries are gone was committed")
	}
}
