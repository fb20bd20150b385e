package repo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

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
			// Referenced and Chunks count the point's entry part too.
			if res.Manifests != 1 || res.Referenced != 2 || res.Chunks != 4 || res.NewlyMarked != 2 || res.Deleted != 0 || !res.Swept {
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
	lease, why, err := r.takeSweep(context.Background(), "")
	if err != nil || lease == nil {
		t.Fatalf("take: %v %q", err, why)
	}
	err = r.CommitPoint(context.Background(), pointManifest(r, NewPointID(time.Now(), "x"), 0), nil)
	if err == nil || !strings.Contains(err.Error(), "garbage collection has been deleting") {
		t.Fatalf("a commit began during a sweep: %v", err)
	}
	if _, why, _ := r.takeSweep(context.Background(), ""); why == "" {
		t.Fatal("two sweeps held the lease")
	}
	if err := r.letGoSweep(context.Background(), *lease); err != nil {
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
	if res.Referenced != 2 || res.NewlyMarked != 2 { // p2's chunk and entry part; p1's

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
		var set idSet
		if err := r.scanPoint(context.Background(), manifestKey(m.Point), m.Point, &set); err != nil {
			t.Fatal(err)
		}
		set.compact()
		p, err := r.openPoint(context.Background(), m.Point)
		if err != nil || len(p.Parts) == 0 {
			t.Fatalf("open: %v, %d parts", err, len(p.Parts))
		}
		var want []idKey
		for _, n := range Needs(m) {
			want = append(want, idKey(n.ID[:16]))
		}
		for _, part := range p.Parts { // v3: the parts are chunks too
			want = append(want, idKey(part.ID[:16]))
		}
		slices.SortFunc(want, cmpKey)
		want = slices.Compact(want)
		if !slices.Equal(set.ids, want) {
			t.Fatalf("scan found %v, want %v", set.ids, want)
		}
		if key != nil {
			continue
		}
		// Change one id in an unencrypted v1 manifest: the digest catches it.
		plain, _ := EncodeManifest(m)
		bad := bytes.Replace(plain, []byte(Hash([]byte("a")).String()), []byte(Hash([]byte("c")).String()), 1)
		body, _ := r.seal(bad, nil)
		st.objs[r.key(manifestKey(m.Point))] = body
		if err := r.scanRefs(context.Background(), manifestKey(m.Point), m.Point, func(ID) {}); err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("a changed manifest scanned: %v", err)
		}
		body, _ = r.seal(plain[:len(plain)/2], nil)
		st.objs[r.key(manifestKey(m.Point))] = body
		if err := r.scanRefs(context.Background(), manifestKey(m.Point), m.Point, func(ID) {}); err == nil {
			t.Fatal("a truncated manifest scanned")
		}
	}
}

// TestGCMemory measures the memory of garbage collection of a repository
// of DRORCH_GC_CHUNKS chunks (default 1,000,000), half of them named by 3
// manifests of one file each, in a store that makes up its chunk listing
// and streams its manifests as it goes (it holds one bit a chunk), so that
// the process's peak RSS is the collector's and the test binary's. Two
// runs: the first marks the unnamed half, the second deletes it. Run with
// DRORCH_GC_MEMORY=1; it takes about half a minute.
func TestGCMemory(t *testing.T) {
	if os.Getenv("DRORCH_GC_MEMORY") == "" {
		t.Skip("set DRORCH_GC_MEMORY=1 to measure")
	}
	n := 1_000_000
	if s := os.Getenv("DRORCH_GC_CHUNKS"); s != "" {
		fmt.Sscan(s, &n)
	}
	st := newSynthStore(n, 3)
	r, err := New(st, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	gcMargin(t, 0)
	stop := make(chan struct{})
	live := make(chan uint64)
	go func() { // the live heap, sampled after forced collections
		var p uint64
		for {
			select {
			case <-stop:
				live <- p
				return
			case <-time.After(200 * time.Millisecond):
			}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			p = max(p, ms.HeapInuse)
		}
	}()
	began := time.Now()
	res1 := gc(t, r, GCOptions{})
	res2 := gc(t, r, GCOptions{})
	close(stop)
	peakLive := <-live
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	rss := uint64(ru.Maxrss) << 10 // KiB on Linux
	t.Logf("%d chunks: run 1 %+v; run 2 %+v", n, res1, res2)
	t.Logf("peak RSS of the test process %.1f MiB; peak live heap %.1f MiB; %s", float64(rss)/(1<<20), float64(peakLive)/(1<<20), time.Since(began).Round(time.Second))
	if res1.Referenced != n/2 || res1.NewlyMarked != n-n/2 || res2.Deleted != n-n/2 {
		t.Fatalf("run 1 named %d and marked %d, run 2 deleted %d; want %d, %d, %d", res1.Referenced, res1.NewlyMarked, res2.Deleted, n/2, n-n/2, n-n/2)
	}
	if rss > 256<<20 {
		t.Fatalf("peak RSS %d MiB, more than 256", rss>>20)
	}
}

// synthStore is a memStore whose chunks/ hold n tiny chunks it makes up
// when listed (chunk i's id begins with i, big-endian, so they list in
// order), and whose points/ hold manifests naming the even chunks, written
// as they are read.
type synthStore struct {
	*memStore
	n       int
	points  []string
	deleted []uint64 // one bit a chunk
}

func newSynthStore(n, manifests int) *synthStore {
	s := &synthStore{memStore: newMemStore(), n: n, deleted: make([]uint64, n/64+1)}
	for i := range manifests {
		s.points = append(s.points, NewPointID(time.Date(2026, 11, 1+i, 0, 0, 0, 0, time.UTC), "m"))
	}
	return s
}

func synthID(i int) ID {
	var id ID
	binary.BigEndian.PutUint64(id[:8], uint64(i))
	h := sha256.Sum256(id[:8])
	copy(id[8:], h[:24])
	return id
}

func (s *synthStore) List(ctx context.Context, prefix string, fn func(o store.Object) error) error {
	switch {
	case strings.HasSuffix(prefix, "/"+chunksDir):
		for i := range s.n {
			s.mu.Lock()
			gone := s.deleted[i/64]&(1<<(i%64)) != 0
			s.mu.Unlock()
			if gone {
				continue
			}
			if err := fn(store.Object{Key: prefix + ChunkKey(synthID(i))[len(chunksDir):], Size: 20}); err != nil {
				return err
			}
		}
		return nil
	case strings.HasSuffix(prefix, "/"+pointsDir):
		for _, p := range s.points {
			if err := fn(store.Object{Key: prefix + p + manifestExt, Size: 1}); err != nil {
				return err
			}
		}
		return nil
	}
	return s.memStore.List(ctx, prefix, fn)
}

func (s *synthStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	for _, p := range s.points {
		if strings.HasSuffix(key, "/"+manifestKey(p)) {
			pr, pw := io.Pipe()
			go func() { pw.CloseWithError(s.writeManifest(pw, p)) }()
			return pr, nil
		}
	}
	return s.memStore.Get(ctx, key)
}

// writeManifest streams, zstd-compressed, a manifest of point whose one
// file is made of the even chunks.
func (s *synthStore) writeManifest(w io.Writer, point string) error {
	zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		return err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(zw, h), 64<<10)
	fmt.Fprintf(bw, `{"format":%q,"version":1,"plan":"web","point":%q,"site":"dc1","source":"dir","snapshot":"2026-11-01T00:00:00Z","epoch":0,"chunker":%q,"compression":"zstd","encryption":"none"}`+"\n", ManifestFormat, point, ChunkerSpec)
	bw.WriteString(`{"path":".","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"1970-01-01T00:00:00Z"}` + "\n")
	fmt.Fprintf(bw, `{"path":"f","type":"file","mode":420,"uid":0,"gid":0,"size":%d,"mtime":"1970-01-01T00:00:00Z","chunks":[`, (s.n+1)/2)
	for i := 0; i < s.n; i += 2 {
		if i > 0 {
			bw.WriteByte(',')
		}
		fmt.Fprintf(bw, `{"id":"%s","size":1}`, synthID(i))
	}
	bw.WriteString("]}\n")
	if err := bw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(zw, `{"totals":{},"digest":"%s%x"}`+"\n", digestPrefix, h.Sum(nil)); err != nil {
		return err
	}
	return zw.Close()
}

func (s *synthStore) Delete(ctx context.Context, key string) error {
	if strings.Contains(key, "/"+chunksDir) {
		id, err := ParseID(key[strings.LastIndexByte(key, '/')+1:])
		if err != nil {
			return err
		}
		i := int(binary.BigEndian.Uint64(id[:8]))
		s.mu.Lock()
		s.deleted[i/64] |= 1 << (i % 64)
		s.mu.Unlock()
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

func TestIDSet(t *testing.T) {
	var s idSet
	want := map[ID]bool{}
	for i := range 300_000 {
		id := synthID(i * 7919 % 100_003) // repeats, out of order
		s.add(id)
		want[id] = true
	}
	s.compact()
	if len(s.ids) != len(want) || !slices.IsSortedFunc(s.ids, cmpKey) {
		t.Fatalf("%d ids, sorted %v; want %d", len(s.ids), slices.IsSortedFunc(s.ids, cmpKey), len(want))
	}
	for i := 1; i < len(s.ids); i++ {
		if s.ids[i] == s.ids[i-1] {
			t.Fatal("duplicate")
		}
	}
	for id := range want {
		if !s.has(id) {
			t.Fatal("missing id")
		}
	}
	if s.has(synthID(100_004)) {
		t.Fatal("has an id never added")
	}
}
