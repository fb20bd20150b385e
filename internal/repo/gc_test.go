package repo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/store"
)

// gcMargin sets GCMargin for one test.
func gcMargin(t *testing.T, d time.Duration) {
	old := GCMargin
	GCMargin = d
	t.Cleanup(func() { GCMargin = old })
}

// putChunks stores chunks with the given contents and returns their ids.
func putChunks(t *testing.T, r *Repo, contents ...string) []ID {
	t.Helper()
	var ids []ID
	for _, c := range contents {
		id := Hash([]byte(c))
		if _, err := r.PutChunk(context.Background(), id, []byte(c)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// commitNaming commits a point whose one file is made of the chunks.
func commitNaming(t *testing.T, r *Repo, point string, ids ...ID) {
	t.Helper()
	m := pointManifest(r, point, 0)
	var refs []Ref
	for _, id := range ids {
		refs = append(refs, Ref{ID: id, Size: 1})
	}
	m.Entries = append(m.Entries, Entry{Path: "f", Type: source.TypeFile, Mode: 0o644, Size: int64(len(refs)), Chunks: refs})
	m.ComputeTotals()
	if err := r.CommitPoint(context.Background(), m, nil); err != nil {
		t.Fatal(err)
	}
}

func present(t *testing.T, r *Repo, id ID) bool {
	t.Helper()
	have, err := r.Chunks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, ok := have[id]
	return ok
}

func gc(t *testing.T, r *Repo, opt GCOptions) GCResult {
	t.Helper()
	res, err := r.CollectGarbage(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestGCTwoPhases(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, KeySize)} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			gcMargin(t, 0)
			r, _ := newTestRepo(t, key)
			ids := putChunks(t, r, "kept", "garbage", "reused")
			p1 := NewPointID(time.Now(), "a")
			commitNaming(t, r, p1, ids[0])

			res := gc(t, r, GCOptions{})
			if res.Manifests != 1 || res.Referenced != 1 || res.Chunks != 3 || res.NewlyMarked != 2 || res.Deleted != 0 || !res.Swept {
				t.Fatalf("first run: %+v, want 2 chunks marked and none deleted", res)
			}
			// A new point names a marked chunk: it is unmarked, not deleted.
			commitNaming(t, r, NewPointID(time.Now().Add(time.Second), "b"), ids[0], ids[2])
			res = gc(t, r, GCOptions{})
			if res.Unmarked != 1 || res.Deleted != 1 || res.Marked != 0 || !res.Swept {
				t.Fatalf("second run: %+v, want 1 unmarked and 1 deleted", res)
			}
			if present(t, r, ids[1]) || !present(t, r, ids[0]) || !present(t, r, ids[2]) {
				t.Fatal("the second run deleted the wrong chunks")
			}
			if ep, err := r.GetEpoch(context.Background()); err != nil || ep.Sweep != nil {
				t.Fatalf("the sweep lease was not let go: %+v %v", ep.Sweep, err)
			}
		})
	}
}

func TestGCMargin(t *testing.T) {
	gcMargin(t, time.Hour)
	r, _ := newTestRepo(t, nil)
	ids := putChunks(t, r, "garbage")
	gc(t, r, GCOptions{})
	if res := gc(t, r, GCOptions{}); res.Deleted != 0 || res.Marked != 1 || !present(t, r, ids[0]) {
		t.Fatalf("a chunk marked less than GCMargin ago was deleted: %+v", res)
	}
}

func TestGCMarkOfAnotherEpochIsVoid(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ids := putChunks(t, r, "garbage")
	gc(t, r, GCOptions{})
	raise(t, r, 2)
	if res := gc(t, r, GCOptions{}); res.Deleted != 0 || res.NewlyMarked != 1 || !present(t, r, ids[0]) {
		t.Fatalf("a mark of epoch 0 was used under epoch 2: %+v", res)
	}
	if res := gc(t, r, GCOptions{}); res.Deleted != 1 {
		t.Fatalf("third run: %+v, want the chunk deleted", res)
	}
}

func TestGCPendingCommitOnlyMarks(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ids := putChunks(t, r, "garbage")
	gc(t, r, GCOptions{})
	p := NewPointID(time.Now(), "p")
	if _, _, err := r.reserve(context.Background(), p, 0); err != nil {
		t.Fatal(err)
	}
	res := gc(t, r, GCOptions{})
	if res.Swept || res.Deleted != 0 || !strings.Contains(res.NoSweep, "being committed") || !present(t, r, ids[0]) {
		t.Fatalf("a run swept while a commit was pending: %+v", res)
	}
	// A dry run says the same and writes nothing.
	if res := gc(t, r, GCOptions{DryRun: true}); res.Deleted != 0 || res.NoSweep == "" {
		t.Fatalf("dry run: %+v", res)
	}
}

func TestGCNoSweep(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ids := putChunks(t, r, "garbage")
	gc(t, r, GCOptions{})
	if res := gc(t, r, GCOptions{NoSweep: "a restore is running"}); res.Deleted != 0 || res.NoSweep != "a restore is running" || !present(t, r, ids[0]) {
		t.Fatalf("%+v", res)
	}
	if res := gc(t, r, GCOptions{DryRun: true}); res.Deleted != 1 || !present(t, r, ids[0]) {
		t.Fatalf("dry run: %+v, want 1 to delete and nothing deleted", res)
	}
}

func TestGCLeaseHoldsCommitsBack(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	lease, why, err := r.takeSweep(context.Background())
	if err != nil || lease == nil {
		t.Fatalf("take: %v %q", err, why)
	}
	err = r.CommitPoint(context.Background(), pointManifest(r, NewPointID(time.Now(), "x"), 0), nil)
	if err == nil || !strings.Contains(err.Error(), "garbage collection has been deleting") {
		t.Fatalf("a commit began during a sweep: %v", err)
	}
	if _, why, _ := r.takeSweep(context.Background()); why == "" {
		t.Fatal("two sweeps held the lease")
	}
	if err := r.letGoSweep(context.Background(), lease.ID); err != nil {
		t.Fatal(err)
	}
	if err := r.CommitPoint(context.Background(), pointManifest(r, NewPointID(time.Now(), "x"), 0), nil); err != nil {
		t.Fatalf("after the sweep: %v", err)
	}
}

func TestGCForgottenInDryRun(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ids := putChunks(t, r, "a", "b")
	p1, p2 := NewPointID(time.Now(), "a"), NewPointID(time.Now().Add(time.Second), "b")
	commitNaming(t, r, p1, ids[0])
	commitNaming(t, r, p2, ids[1])
	res := gc(t, r, GCOptions{DryRun: true, Forgotten: map[string]bool{p1: true}})
	if res.Referenced != 1 || res.NewlyMarked != 1 {
		t.Fatalf("%+v", res)
	}
	if err := r.ForgetPoint(context.Background(), p1); err != nil {
		t.Fatal(err)
	}
	if pts, _ := r.Points(context.Background()); len(pts) != 1 || pts[0].ID != p2 {
		t.Fatalf("points after forget: %+v", pts)
	}
}

// TestScanRefs checks the streaming scan against the decoded manifest, and
// that it refuses what the decoder refuses.
func TestScanRefs(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, KeySize)} {
		r, st := newTestRepo(t, key)
		m := testManifest(r.Encryption())
		if err := r.PutManifest(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		var got []ID
		if err := r.scanRefs(context.Background(), m.Point, func(id ID) { got = append(got, id) }); err != nil {
			t.Fatal(err)
		}
		var want []ID
		for _, n := range Needs(m) {
			want = append(want, n.ID)
		}
		slices.SortFunc(got, cmpID)
		got = slices.Compact(got)
		slices.SortFunc(want, cmpID)
		want = slices.Compact(want)
		if !slices.Equal(got, want) {
			t.Fatalf("scan found %v, want %v", got, want)
		}
		if key != nil {
			continue
		}
		// Change one id in an unencrypted manifest: the digest catches it.
		plain, _ := EncodeManifest(m)
		bad := bytes.Replace(plain, []byte(Hash([]byte("a")).String()), []byte(Hash([]byte("c")).String()), 1)
		body, _ := r.seal(bad, nil)
		st.objs[r.key(manifestKey(m.Point))] = body
		if err := r.scanRefs(context.Background(), m.Point, func(ID) {}); err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("a changed manifest scanned: %v", err)
		}
		body, _ = r.seal(plain[:len(plain)/2], nil)
		st.objs[r.key(manifestKey(m.Point))] = body
		if err := r.scanRefs(context.Background(), m.Point, func(ID) {}); err == nil {
			t.Fatal("a truncated manifest scanned")
		}
	}
}

// TestGCMemory measures the peak heap of a garbage collection of a
// repository of DRORCH_GC_CHUNKS chunks (default 1,000,000), half of them
// named by 3 manifests, in a store that makes its listing up as it goes
// (the store's memory is not the collector's). Run with
// DRORCH_GC_MEMORY=1; it takes about a minute.
func TestGCMemory(t *testing.T) {
	if os.Getenv("DRORCH_GC_MEMORY") == "" {
		t.Skip("set DRORCH_GC_MEMORY=1 to measure")
	}
	n := 1_000_000
	if s := os.Getenv("DRORCH_GC_CHUNKS"); s != "" {
		fmt.Sscan(s, &n)
	}
	st := newSynthStore(n)
	r, err := New(st, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Three manifests each naming the even chunks, in one file.
	for i := range 3 {
		m := pointManifest(r, NewPointID(time.Date(2026, 11, 1+i, 0, 0, 0, 0, time.UTC), "m"), 0)
		var refs []Ref
		for j := 0; j < n; j += 2 {
			refs = append(refs, Ref{ID: st.id(j), Size: 1})
		}
		m.Entries = append(m.Entries, Entry{Path: "f", Type: source.TypeFile, Mode: 0o644, Size: int64(len(refs)), Chunks: refs})
		m.ComputeTotals()
		if err := r.PutManifest(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	// Two samplers: the heap in use as the program runs (garbage
	// included, so it depends on GOGC and on the test's own data), and
	// the live heap, sampled after a forced collection.
	stop := make(chan struct{})
	type peaks struct{ inUse, live uint64 }
	peak := make(chan peaks)
	go func() {
		var p peaks
		for i := 0; ; i++ {
			var ms runtime.MemStats
			if i%10 == 0 {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				p.live = max(p.live, ms.HeapInuse)
			} else {
				runtime.ReadMemStats(&ms)
			}
			p.inUse = max(p.inUse, ms.HeapInuse)
			select {
			case <-stop:
				peak <- p
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	began := time.Now()
	gcMargin(t, 0)
	res1 := gc(t, r, GCOptions{})
	res2 := gc(t, r, GCOptions{})
	close(stop)
	p := <-peak
	base := before.HeapInuse
	t.Logf("%d chunks: run 1 %+v; run 2 %+v", n, res1, res2)
	t.Logf("the collector's peak live heap %.1f MiB, peak heap in use (garbage included) %.1f MiB, above %.1f MiB of the test's own store and manifests; %s",
		float64(p.live-min(p.live, base))/(1<<20), float64(p.inUse-min(p.inUse, base))/(1<<20), float64(base)/(1<<20), time.Since(began).Round(time.Second))
	if res2.Deleted != n/2 {
		t.Fatalf("deleted %d, want %d", res2.Deleted, n/2)
	}
	if got := p.live - min(p.live, base); got > 128<<20 {
		t.Fatalf("the collector's peak live heap is %d MiB, more than 128 (half the 256 MiB target, for GOGC=100's garbage)", got>>20)
	}
}

// synthStore is a memStore whose chunks/ hold n tiny chunks it makes up
// when listed, so that a test can collect a million chunks in seconds.
type synthStore struct {
	*memStore
	byIndex []ID
	sorted  []ID
	deleted []bool // by position in sorted
}

func newSynthStore(n int) *synthStore {
	s := &synthStore{memStore: newMemStore(), byIndex: make([]ID, n)}
	for i := range s.byIndex {
		s.byIndex[i] = Hash(fmt.Appendf(nil, "chunk %d", i))
	}
	s.sorted = slices.Clone(s.byIndex)
	slices.SortFunc(s.sorted, cmpID)
	s.deleted = make([]bool, n)
	return s
}

func (s *synthStore) id(i int) ID { return s.byIndex[i] }

func (s *synthStore) List(ctx context.Context, prefix string, fn func(o store.Object) error) error {
	if !strings.HasSuffix(prefix, "/"+chunksDir) {
		return s.memStore.List(ctx, prefix, fn)
	}
	for i, id := range s.sorted {
		if s.deleted[i] {
			continue
		}
		if err := fn(store.Object{Key: prefix + ChunkKey(id)[len(chunksDir):], Size: 20}); err != nil {
			return err
		}
	}
	return nil
}

func (s *synthStore) Delete(ctx context.Context, key string) error {
	if i := strings.Index(key, "/"+chunksDir); i >= 0 {
		id, err := ParseID(key[strings.LastIndexByte(key, '/')+1:])
		if err != nil {
			return err
		}
		j, ok := slices.BinarySearchFunc(s.sorted, id, cmpID)
		if ok {
			s.mu.Lock()
			s.deleted[j] = true
			s.mu.Unlock()
		}
		return nil
	}
	return s.memStore.Delete(ctx, key)
}

func TestPins(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, KeySize)} {
		r, st := newTestRepo(t, key)
		ctx := context.Background()
		p := NewPointID(time.Now(), "a")
		if err := r.PinPoint(ctx, Pin{Point: p}); err == nil {
			t.Fatal("pinned a point that does not exist")
		}
		commitNaming(t, r, p)
		if err := r.PinPoint(ctx, Pin{Point: p, By: "test"}); err != nil {
			t.Fatal(err)
		}
		pins, err := r.Pins(ctx)
		if err != nil || len(pins) != 1 || pins[p].By != "test" {
			t.Fatalf("pins %+v, %v", pins, err)
		}
		if key != nil {
			// A pin copied under another point's name does not open.
			q := NewPointID(time.Now().Add(time.Second), "b")
			st.objs[r.key(pinKey(q))] = st.objs[r.key(pinKey(p))]
			if _, err := r.Pins(ctx); err == nil {
				t.Fatal("a pin under another name was accepted")
			}
			delete(st.objs, r.key(pinKey(q)))
		}
		if err := r.UnpinPoint(ctx, p); err != nil {
			t.Fatal(err)
		}
		if pins, err := r.Pins(ctx); err != nil || len(pins) != 0 {
			t.Fatalf("after unpin: %+v, %v", pins, err)
		}
	}
}
