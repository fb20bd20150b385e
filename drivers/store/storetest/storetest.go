// Package storetest is the conformance suite every store.Store must pass, run
// by each driver's tests against its real server.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// Run runs the suite. newStore must return a store that is empty, isolated from
// every other store it returns, and cleaned up by the test; the suite calls
// Prepare on it.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"PrepareIsIdempotent", testPrepare},
		{"PutGetStat", testPutGetStat},
		{"Overwrite", testOverwrite},
		{"EmptyObject", testEmpty},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"List", testList},
		{"ListStopsOnError", testListStops},
		{"ListHonoursContext", testListContext},
		{"LargeObjects", testLarge},
		{"UnknownSizeSmall", testUnknownSizeSmall},
		{"FailedPutLeavesNothing", testFailedPut},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentPutsSameKey", testConcurrentSameKey},
		{"ETag", testETag},
		{"PutIfAbsent", testPutIfAbsent},
		{"PutIfMatch", testPutIfMatch},
		{"PutIfInvalid", testPutIfInvalid},
		{"PutIfRaces", testPutIfRaces},
		{"CompareAndSwapCounter", testCASCounter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Prepare(ctx(t)); err != nil {
				t.Fatalf("prepare %s: %v", s.Location(), err)
			}
			tc.fn(t, s)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// onlyReader hides every interface but io.Reader (Seeker, ReaderAt, WriterTo),
// as a pipe or a compressor would, so stores cannot take shortcuts.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func put(t *testing.T, s store.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(ctx(t), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func get(t *testing.T, s store.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(ctx(t), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("close %q: %v", key, err)
	}
	return b
}

func list(t *testing.T, s store.Store, prefix string) []store.Object {
	t.Helper()
	var objs []store.Object
	if err := s.List(ctx(t), prefix, func(o store.Object) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return objs
}

func keys(objs []store.Object) []string {
	ks := make([]string, len(objs))
	for i, o := range objs {
		ks[i] = o.Key
	}
	return ks
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !drivers.IsNotFound(err) {
		t.Fatalf("%s: got %v, want an error wrapping drivers.ErrNotFound", what, err)
	}
	if reason, ok := drivers.IsPermanent(err); ok {
		t.Fatalf("%s: not found must not be permanent (reason %s): %v", what, reason, err)
	}
}

func testPrepare(t *testing.T, s store.Store) {
	put(t, s, "kept", []byte("x"))
	if err := s.Prepare(ctx(t)); err != nil {
		t.Fatalf("second prepare: %v", err)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("after prepare the store holds %q, want only [kept]: prepare must leave nothing behind", got)
	}
}

func testPutGetStat(t *testing.T, s store.Store) {
	data := randomBytes(t, 300_000)
	before := time.Now()
	put(t, s, "chunks/ab/abcdef", data)
	if got := get(t, s, "chunks/ab/abcdef"); !bytes.Equal(got, data) {
		t.Fatalf("get returned %d bytes that differ from the %d put", len(got), len(data))
	}
	o, err := s.Stat(ctx(t), "chunks/ab/abcdef")
	if err != nil {
		t.Fatal(err)
	}
	if o.Key != "chunks/ab/abcdef" || o.Size != int64(len(data)) {
		t.Fatalf("stat: got %+v, want key chunks/ab/abcdef size %d", o, len(data))
	}
	// Server clocks and second-granular timestamps: allow some slack.
	if o.Modified.Before(before.Add(-time.Minute)) || o.Modified.After(time.Now().Add(time.Minute)) {
		t.Fatalf("stat: modified %s, want about %s", o.Modified, before)
	}
}

func testOverwrite(t *testing.T, s store.Store) {
	put(t, s, "epoch.json", []byte(`{"epoch":1}`))
	put(t, s, "epoch.json", []byte(`{"epoch":2, "longer": true}`))
	if got := string(get(t, s, "epoch.json")); got != `{"epoch":2, "longer": true}` {
		t.Fatalf("after overwrite got %q", got)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"epoch.json"}) {
		t.Fatalf("after overwrite list = %q", got)
	}
}

func testEmpty(t *testing.T, s store.Store) {
	put(t, s, "empty", nil)
	if got := get(t, s, "empty"); len(got) != 0 {
		t.Fatalf("empty object read back as %d bytes", len(got))
	}
	o, err := s.Stat(ctx(t), "empty")
	if err != nil || o.Size != 0 {
		t.Fatalf("stat empty: %+v, %v", o, err)
	}
}

func testNotFound(t *testing.T, s store.Store) {
	_, err := s.Get(ctx(t), "points/missing.json")
	wantNotFound(t, "get of an absent key", err)
	_, err = s.Stat(ctx(t), "points/missing.json")
	wantNotFound(t, "stat of an absent key", err)
	if got := list(t, s, "points/"); len(got) != 0 {
		t.Fatalf("list of an empty prefix: %v", got)
	}
}

func testDelete(t *testing.T, s store.Store) {
	if err := s.Delete(ctx(t), "never-existed"); err != nil {
		t.Fatalf("delete of an absent key: %v", err)
	}
	put(t, s, "a/doomed", []byte("x"))
	put(t, s, "a/kept", []byte("y"))
	if err := s.Delete(ctx(t), "a/doomed"); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(ctx(t), "a/doomed")
	wantNotFound(t, "get after delete", err)
	if err := s.Delete(ctx(t), "a/doomed"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	if got := keys(list(t, s, "")); !slices.Equal(got, []string{"a/kept"}) {
		t.Fatalf("after delete list = %q", got)
	}
}

// listKeys mix separators and characters that sort around '/', spaces and
// non-ASCII, so that both prefix matching and lexical (byte) order are tested.
var listKeys = []string{
	"a/b/c",
	"a/b/d",
	"a/bz",
	"a-b",
	"a.b",
	"a0",
	"b",
	"dir with space/file name.txt",
	"ünïcode/ключ/日本語",
	"ünïcode/zebra",
	"points/2025-01-02T03:04:05Z-abc.json",
	"chunks/ab/ab12",
	"chunks/ff/ff00",
}

func testList(t *testing.T, s store.Store) {
	for i, k := range listKeys {
		put(t, s, k, []byte(fmt.Sprint(i, k)))
	}
	sorted := slices.Clone(listKeys)
	sort.Strings(sorted) // byte order, which is S3's order

	all := list(t, s, "")
	if got := keys(all); !slices.Equal(got, sorted) {
		t.Fatalf("list all:\n got %q\nwant %q", got, sorted)
	}
	for _, o := range all {
		i := slices.Index(listKeys, o.Key)
		if want := int64(len(fmt.Sprint(i, o.Key))); o.Size != want {
			t.Errorf("list: %q has size %d, want %d", o.Key, o.Size, want)
		}
	}

	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"a/", []string{"a/b/c", "a/b/d", "a/bz"}},
		{"a/b", []string{"a/b/c", "a/b/d", "a/bz"}}, // a string prefix, not a directory
		{"a/b/", []string{"a/b/c", "a/b/d"}},
		{"a", []string{"a-b", "a.b", "a/b/c", "a/b/d", "a/bz", "a0"}},
		{"chunks/", []string{"chunks/ab/ab12", "chunks/ff/ff00"}},
		{"dir with space/", []string{"dir with space/file name.txt"}},
		{"ünïcode/", []string{"ünïcode/zebra", "ünïcode/ключ/日本語"}},
		{"a/b/c", []string{"a/b/c"}},
		{"nothing", nil},
	} {
		if got := keys(list(t, s, tc.prefix)); !slices.Equal(got, tc.want) {
			t.Errorf("list %q:\n got %q\nwant %q", tc.prefix, got, tc.want)
		}
	}
	if got := string(get(t, s, "ünïcode/ключ/日本語")); got != fmt.Sprint(slices.Index(listKeys, "ünïcode/ключ/日本語"), "ünïcode/ключ/日本語") {
		t.Errorf("get of a unicode key returned %q", got)
	}
}

func testListStops(t *testing.T, s store.Store) {
	for _, k := range []string{"x/1", "x/2", "x/3"} {
		put(t, s, k, []byte(k))
	}
	stop := errors.New("enough")
	var seen []string
	err := s.List(ctx(t), "x/", func(o store.Object) error {
		seen = append(seen, o.Key)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("list: got %v, want the error fn returned", err)
	}
	if !slices.Equal(seen, []string{"x/1", "x/2"}) {
		t.Fatalf("list called fn for %q after it failed", seen)
	}
}

func testListContext(t *testing.T, s store.Store) {
	put(t, s, "k", []byte("v"))
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	err := s.List(c, "", func(store.Object) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("list with a cancelled context: got %v, want context.Canceled", err)
	}
}

func testLarge(t *testing.T, s store.Store) {
	for _, tc := range []struct {
		key      string
		size     int64
		declared int64
	}{
		{"unknown-size", 20 << 20, -1}, // more than one upload part of any sane size
		{"known-size", 17 << 20, 17 << 20},
	} {
		data := randomBytes(t, int(tc.size))
		if err := s.Put(ctx(t), tc.key, onlyReader{bytes.NewReader(data)}, tc.declared); err != nil {
			t.Fatal(err)
		}
		o, err := s.Stat(ctx(t), tc.key)
		if err != nil || o.Size != tc.size {
			t.Fatalf("stat %s: %+v, %v; want size %d", tc.key, o, err, tc.size)
		}
		rc, err := s.Get(ctx(t), tc.key)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(data); n != tc.size || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("%s: read back %d bytes with a different digest", tc.key, n)
		}
	}
}

func testUnknownSizeSmall(t *testing.T, s store.Store) {
	data := []byte("a manifest of unknown length")
	if err := s.Put(ctx(t), "small", onlyReader{bytes.NewReader(data)}, -1); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "small"); !bytes.Equal(got, data) {
		t.Fatalf("got %q", got)
	}
}

// failingReader returns n bytes and then err.
type failingReader struct {
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, f.err
	}
	k := min(len(p), f.n)
	clear(p[:k])
	f.n -= k
	return k, nil
}

func testFailedPut(t *testing.T, s store.Store) {
	broken := errors.New("source went away")
	for _, tc := range []struct {
		name string
		r    io.Reader
		size int64
		want error // what the error must wrap
	}{
		{"known size", &failingReader{n: 100_000, err: broken}, 1 << 20, broken},
		{"unknown size, after a first part", &failingReader{n: 17 << 20, err: broken}, -1, broken},
		{"reader shorter than size", bytes.NewReader(make([]byte, 1000)), 5000, io.ErrUnexpectedEOF},
	} {
		err := s.Put(ctx(t), "partial", tc.r, tc.size)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: put got %v, want an error wrapping %v", tc.name, err, tc.want)
		}
		_, err = s.Stat(ctx(t), "partial")
		if !drivers.IsNotFound(err) {
			t.Errorf("%s: after a failed put, stat got %v, want not found: an object must appear whole or not at all", tc.name, err)
		}
	}
}

func testConcurrentPuts(t *testing.T, s store.Store) {
	const n = 24
	datas := make([][]byte, n)
	for i := range datas {
		datas[i] = randomBytes(t, 64<<10+i)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			key := fmt.Sprintf("chunks/%02x/%04d", i, i)
			errs[i] = s.Put(ctx(t), key, bytes.NewReader(datas[i]), int64(len(datas[i])))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	objs := list(t, s, "chunks/")
	if len(objs) != n {
		t.Fatalf("list after %d concurrent puts found %d objects", n, len(objs))
	}
	for i := range n {
		if got := get(t, s, fmt.Sprintf("chunks/%02x/%04d", i, i)); !bytes.Equal(got, datas[i]) {
			t.Fatalf("object %d differs after concurrent puts", i)
		}
	}
}

func testConcurrentSameKey(t *testing.T, s store.Store) {
	const n = 8
	datas := make([][]byte, n)
	for i := range datas {
		datas[i] = bytes.Repeat([]byte{byte('a' + i)}, 200_000+i)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Put(ctx(t), "epoch.json", bytes.NewReader(datas[i]), int64(len(datas[i])))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	got := get(t, s, "epoch.json")
	if !slices.ContainsFunc(datas, func(d []byte) bool { return bytes.Equal(d, got) }) {
		t.Fatalf("after concurrent puts to one key, it holds %d bytes that match none of them", len(got))
	}
}

func putIf(t *testing.T, s store.Store, key string, data []byte, cond store.Condition) (string, error) {
	t.Helper()
	return s.PutIf(ctx(t), key, bytes.NewReader(data), int64(len(data)), cond)
}

func wantPrecondition(t *testing.T, what string, err error) {
	t.Helper()
	if !drivers.IsPreconditionFailed(err) {
		t.Fatalf("%s: got %v, want an error wrapping drivers.ErrPreconditionFailed", what, err)
	}
	if reason, ok := drivers.IsPermanent(err); ok {
		t.Fatalf("%s: a failed condition must not be permanent (reason %s): %v", what, reason, err)
	}
}

func getObject(t *testing.T, s store.Store, key string) ([]byte, store.Object) {
	t.Helper()
	rc, o, err := s.GetObject(ctx(t), key)
	if err != nil {
		t.Fatalf("get object %q: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return b, o
}

// testETag checks that Stat, GetObject and PutIf agree on a version's ETag
// and that a new content gets a new one.
func testETag(t *testing.T, s store.Store) {
	put(t, s, "epoch.json", []byte(`{"epoch":1}`))
	st1, err := s.Stat(ctx(t), "epoch.json")
	if err != nil {
		t.Fatal(err)
	}
	b, o1 := getObject(t, s, "epoch.json")
	if string(b) != `{"epoch":1}` || o1.Key != "epoch.json" || o1.Size != int64(len(b)) {
		t.Fatalf("get object: %q, %+v", b, o1)
	}
	if st1.ETag == "" || o1.ETag != st1.ETag {
		t.Fatalf("stat ETag %q, get object ETag %q: want the same, not empty", st1.ETag, o1.ETag)
	}
	etag2, err := putIf(t, s, "epoch.json", []byte(`{"epoch":2}`), store.IfMatch(st1.ETag))
	if err != nil {
		t.Fatal(err)
	}
	st2, err := s.Stat(ctx(t), "epoch.json")
	if err != nil {
		t.Fatal(err)
	}
	if etag2 == "" || etag2 != st2.ETag || etag2 == st1.ETag {
		t.Fatalf("after a new content: put returned ETag %q, stat %q, the old one was %q: want a new ETag, the same from both", etag2, st2.ETag, st1.ETag)
	}
	_, _, err = s.GetObject(ctx(t), "missing")
	wantNotFound(t, "get object of an absent key", err)
}

func testPutIfAbsent(t *testing.T, s store.Store) {
	etag, err := putIf(t, s, "points/p.json.zst", []byte("first"), store.IfAbsent())
	if err != nil {
		t.Fatalf("create an absent key: %v", err)
	}
	if o, err := s.Stat(ctx(t), "points/p.json.zst"); err != nil || o.ETag != etag {
		t.Fatalf("stat after create: %+v %v, want ETag %q", o, err, etag)
	}
	_, err = putIf(t, s, "points/p.json.zst", []byte("second, longer"), store.IfAbsent())
	wantPrecondition(t, "create over an existing key", err)
	if got := string(get(t, s, "points/p.json.zst")); got != "first" {
		t.Fatalf("a refused create changed the object to %q", got)
	}
	if err := s.Delete(ctx(t), "points/p.json.zst"); err != nil {
		t.Fatal(err)
	}
	if _, err := putIf(t, s, "points/p.json.zst", nil, store.IfAbsent()); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func testPutIfMatch(t *testing.T, s store.Store) {
	put(t, s, "epoch.json", []byte("v1"))
	o1, err := s.Stat(ctx(t), "epoch.json")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := putIf(t, s, "epoch.json", []byte("v2"), store.IfMatch(o1.ETag))
	if err != nil {
		t.Fatalf("replace the version read: %v", err)
	}
	_, err = putIf(t, s, "epoch.json", []byte("stale"), store.IfMatch(o1.ETag))
	wantPrecondition(t, "replace a version that was replaced since", err)
	if got := string(get(t, s, "epoch.json")); got != "v2" {
		t.Fatalf("a refused replace changed the object to %q", got)
	}
	_, err = putIf(t, s, "epoch.json", []byte("v3"), store.IfMatch("0123456789abcdef0123456789abcdef"))
	wantPrecondition(t, "replace with an ETag that never existed", err)
	if err := s.Delete(ctx(t), "epoch.json"); err != nil {
		t.Fatal(err)
	}
	_, err = putIf(t, s, "epoch.json", []byte("v3"), store.IfMatch(e2))
	wantPrecondition(t, "replace a version that was deleted", err)
	_, err = s.Stat(ctx(t), "epoch.json")
	wantNotFound(t, "stat after a refused replace of a deleted object", err)
}

func testPutIfInvalid(t *testing.T, s store.Store) {
	for _, tc := range []struct {
		name string
		size int64
		cond store.Condition
	}{
		{"no condition", 1, store.Condition{}},
		{"both conditions", 1, store.Condition{IfMatch: "abc", IfAbsent: true}},
		{"unknown size", -1, store.IfAbsent()},
	} {
		_, err := s.PutIf(ctx(t), "k", bytes.NewReader([]byte("x")), tc.size, tc.cond)
		if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidInput {
			t.Errorf("%s: got %v, want a permanent InvalidInput error", tc.name, err)
		}
	}
	if got := list(t, s, ""); len(got) != 0 {
		t.Fatalf("refused puts left %v", keys(got))
	}
}

// testPutIfRaces starts writers with the same condition at once, many times:
// exactly one may win each round, and the object holds the winner's body.
func testPutIfRaces(t *testing.T, s store.Store) {
	const writers, rounds = 6, 8
	for round := range rounds {
		key := fmt.Sprintf("race/%d", round)
		var cond store.Condition
		if round%2 == 0 {
			cond = store.IfAbsent()
		} else {
			put(t, s, key, []byte("base"))
			o, err := s.Stat(ctx(t), key)
			if err != nil {
				t.Fatal(err)
			}
			cond = store.IfMatch(o.ETag)
		}
		var wg sync.WaitGroup
		errs := make([]error, writers)
		start := make(chan struct{})
		for i := range writers {
			wg.Go(func() {
				<-start
				_, errs[i] = putIf(t, s, key, []byte(fmt.Sprintf("writer %d", i)), cond)
			})
		}
		close(start)
		wg.Wait()
		var won []int
		for i, err := range errs {
			switch {
			case err == nil:
				won = append(won, i)
			case !drivers.IsPreconditionFailed(err):
				t.Fatalf("round %d, writer %d: %v", round, i, err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d (%+v): writers %v all succeeded, want exactly one", round, cond, won)
		}
		if got, want := string(get(t, s, key)), fmt.Sprintf("writer %d", won[0]); got != want {
			t.Fatalf("round %d: the object holds %q, but the winner wrote %q", round, got, want)
		}
	}
}

// testCASCounter increments a counter from several goroutines by read,
// compute, compare-and-swap: no increment may be lost.
func testCASCounter(t *testing.T, s store.Store) {
	const workers, each = 4, 6
	if _, err := putIf(t, s, "counter", []byte("0"), store.IfAbsent()); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for range each {
				for {
					n, etag, err := readCounter(ctx(t), s)
					if err != nil {
						errs[w] = err
						return
					}
					body := []byte(fmt.Sprint(n + 1))
					_, err = s.PutIf(ctx(t), "counter", bytes.NewReader(body), int64(len(body)), store.IfMatch(etag))
					if err == nil {
						break
					}
					if !drivers.IsPreconditionFailed(err) {
						errs[w] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got, want := string(get(t, s, "counter")), fmt.Sprint(workers*each); got != want {
		t.Fatalf("counter is %s after %s compare-and-swap increments: updates were lost", got, want)
	}
}

func readCounter(c context.Context, s store.Store) (n int, etag string, err error) {
	rc, o, err := s.GetObject(c, "counter")
	if err != nil {
		return 0, "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return 0, "", err
	}
	_, err = fmt.Sscan(string(b), &n)
	return n, o.ETag, err
}
