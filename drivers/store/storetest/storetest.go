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
