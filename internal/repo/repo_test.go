package repo

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drorch/drorch/drivers"
)

var testKey = bytes.Repeat([]byte{0x42}, KeySize)

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// textBytes returns n bytes of compressible, text-like data.
func textBytes(seed uint64, n int) []byte {
	words := strings.Fields("the quick brown fox jumps over a lazy dog while backups run near raw upload speed and restores rebuild every file from its chunks")
	r := rand.New(rand.NewPCG(seed, seed))
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func newTestRepo(t testing.TB, key []byte) (*Repo, *memStore) {
	t.Helper()
	st := newMemStore()
	r, err := New(st, "web", key)
	if err != nil {
		t.Fatal(err)
	}
	return r, st
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a permanent %s error", reason)
	}
	if got, ok := drivers.IsPermanent(err); !ok || got != reason {
		t.Fatalf("error %q: reason %q (permanent %v), want %s", err, got, ok, reason)
	}
}

func TestNew(t *testing.T) {
	st := newMemStore()
	for _, plan := range []string{"", "Web", "-web", "a/b", "web.x", strings.Repeat("a", 64)} {
		if _, err := New(st, plan, nil); err == nil {
			t.Errorf("New(%q): no error", plan)
		}
	}
	for _, key := range [][]byte{{}, make([]byte, 16), make([]byte, 33)} {
		_, err := New(st, "web", key)
		wantReason(t, err, drivers.ReasonInvalidConfig)
	}
	r, err := New(st, "web_2-x", testKey)
	if err != nil {
		t.Fatal(err)
	}
	if r.Location() != "mem://test/web_2-x" || !r.Encrypted() || r.Store() != st || r.Encryption() != EncryptionAESGCM {
		t.Errorf("Location %q Encrypted %v Encryption %q", r.Location(), r.Encrypted(), r.Encryption())
	}
}

func TestID(t *testing.T) {
	id := Hash([]byte("hello"))
	s := id.String()
	if s != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" || id.Short() != s[:12] {
		t.Fatalf("String %s Short %s", s, id.Short())
	}
	got, err := ParseID(s)
	if err != nil || got != id {
		t.Fatalf("ParseID: %v %v", got, err)
	}
	for _, bad := range []string{"", s[:63], s + "0", strings.ToUpper(s), "g" + s[1:]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q): no error", bad)
		}
	}
	text, _ := id.MarshalText()
	var back ID
	if err := back.UnmarshalText(text); err != nil || back != id {
		t.Fatalf("text round trip: %v %v", back, err)
	}
}

func TestChunkRoundTrip(t *testing.T) {
	for _, key := range [][]byte{nil, testKey} {
		r, st := newTestRepo(t, key)
		ctx := context.Background()
		sizes := map[ID]int64{}
		for i, plain := range [][]byte{
			{},                       // an empty file's chunk
			[]byte("x"),              // below zstd's minimum window
			textBytes(1, 1000),       // small and compressible
			randomBytes(2, ChunkMin), // incompressible
			textBytes(3, ChunkMax),   // largest, compressible
			randomBytes(4, ChunkMax), // largest, incompressible
		} {
			id := Hash(plain)
			stored, err := r.PutChunk(ctx, id, plain)
			if err != nil {
				t.Fatalf("key %v chunk %d: %v", key != nil, i, err)
			}
			body := st.raw("web/" + ChunkKey(id))
			if int64(len(body)) != stored {
				t.Fatalf("stored %d, object has %d bytes", stored, len(body))
			}
			if key != nil && bytes.Contains(body, plain) && len(plain) > 16 {
				t.Fatalf("chunk %d: plaintext visible in the sealed body", i)
			}
			sizes[id] = stored
			got, err := r.GetChunk(ctx, id)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("chunk %d: GetChunk: %d bytes, %v", i, len(got), err)
			}
		}
		// Junk under chunks/ is ignored.
		id0 := Hash(nil).String()
		st.set("web/chunks/ab/not-an-id", nil)
		st.set("web/chunks/ff/"+id0, nil)
		st.set("web/chunks/"+id0, nil)
		st.set("other/chunks/"+id0[:2]+"/"+id0, nil)
		got, err := r.Chunks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(sizes) {
			t.Fatalf("Chunks: %d, want %d", len(got), len(sizes))
		}
		for id, n := range sizes {
			if got[id] != n {
				t.Errorf("Chunks[%s] = %d, want %d", id.Short(), got[id], n)
			}
		}
	}
}

func TestChunkKey(t *testing.T) {
	id := Hash([]byte("hello"))
	if got := ChunkKey(id); got != "chunks/2c/"+id.String() {
		t.Fatal(got)
	}
}

func TestChunkTooLarge(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	plain := make([]byte, ChunkMax+1)
	_, err := r.PutChunk(context.Background(), Hash(plain), plain)
	wantReason(t, err, drivers.ReasonInvalidInput)
}

func TestChunkCorruption(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, testKey} {
		r, st := newTestRepo(t, key)
		plain := textBytes(5, 300<<10)
		id := Hash(plain)
		if _, err := r.PutChunk(ctx, id, plain); err != nil {
			t.Fatal(err)
		}
		k := "web/" + ChunkKey(id)
		good := bytes.Clone(st.raw(k))
		for _, pos := range []int{0, 5, 13, len(good) / 2, len(good) - 1} {
			bad := bytes.Clone(good)
			bad[pos] ^= 0x01
			st.set(k, bad)
			_, err := r.GetChunk(ctx, id)
			wantReason(t, err, drivers.ReasonCorrupt)
			msg := err.Error()
			if !strings.Contains(msg, id.String()) || !strings.Contains(msg, "mem://test/web/"+ChunkKey(id)) {
				t.Errorf("key %v, byte %d flipped: message does not name the chunk and where: %s", key != nil, pos, msg)
			}
		}
		for _, bad := range [][]byte{nil, good[:10], good[:len(good)-1]} {
			st.set(k, bad)
			_, err := r.GetChunk(ctx, id)
			wantReason(t, err, drivers.ReasonCorrupt)
		}
		st.set(k, good)

		// A valid body stored under another chunk's name does not open.
		other := Hash([]byte("other"))
		st.set("web/"+ChunkKey(other), good)
		_, err := r.GetChunk(ctx, other)
		wantReason(t, err, drivers.ReasonCorrupt)
		if !strings.Contains(err.Error(), other.String()) {
			t.Errorf("message does not name the chunk: %s", err)
		}
	}
}

func TestChunkContentMismatchMessage(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	body, _ := r.SealChunk(Hash([]byte("a")), []byte("a"))
	id := Hash([]byte("b"))
	_, err := r.OpenChunk(id, body)
	wantReason(t, err, drivers.ReasonCorrupt)
	want := "chunk " + id.String() + " at mem://test/web/chunks/" + id.String()[:2] + "/" + id.String() + ": content does not match its id (corrupted)"
	if err.Error() != want {
		t.Errorf("got  %s\nwant %s", err, want)
	}
}

func TestChunkWrongKey(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, testKey)
	plain := []byte("secret data")
	id := Hash(plain)
	if _, err := r.PutChunk(ctx, id, plain); err != nil {
		t.Fatal(err)
	}
	other, _ := New(st, "web", bytes.Repeat([]byte{0x43}, KeySize))
	_, err := other.GetChunk(ctx, id)
	wantReason(t, err, drivers.ReasonCorrupt)
	none, _ := New(st, "web", nil)
	_, err = none.GetChunk(ctx, id)
	wantReason(t, err, drivers.ReasonCorrupt)
	if !strings.Contains(err.Error(), "key") {
		t.Errorf("reading a sealed chunk without a key should hint at the key: %s", err)
	}
	// A chunk written without a key does not open with one.
	if _, err := none.PutChunk(ctx, id, plain); err != nil {
		t.Fatal(err)
	}
	_, err = r.GetChunk(ctx, id)
	wantReason(t, err, drivers.ReasonCorrupt)
}

func TestChunkMissing(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	id := Hash([]byte("absent"))
	_, err := r.GetChunk(context.Background(), id)
	if !errors.Is(err, drivers.ErrNotFound) || !strings.Contains(err.Error(), id.String()) {
		t.Fatalf("got %v, want not found naming %s", err, id)
	}
	if _, ok := drivers.IsPermanent(err); ok {
		t.Fatalf("not found should not be permanent: %v", err)
	}
}

// A small object that decompresses to more than a chunk can hold is refused
// before it is expanded.
func TestChunkDecompressionBomb(t *testing.T) {
	r, st := newTestRepo(t, nil)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{ChunkMax + 1, 64 << 20} {
		plain := make([]byte, n)
		id := Hash(plain)
		st.set("web/"+ChunkKey(id), enc.EncodeAll(plain, nil))
		_, err := r.GetChunk(context.Background(), id)
		wantReason(t, err, drivers.ReasonCorrupt)
	}
	// Two frames that each fit but together do not.
	half := make([]byte, ChunkMax/2+1)
	body := enc.EncodeAll(half, enc.EncodeAll(half, nil))
	id := Hash(append(bytes.Clone(half), half...))
	st.set("web/"+ChunkKey(id), body)
	_, err = r.GetChunk(context.Background(), id)
	wantReason(t, err, drivers.ReasonCorrupt)
}

func TestChunkRawCopy(t *testing.T) {
	ctx := context.Background()
	a, _ := newTestRepo(t, testKey)
	b, _ := newTestRepo(t, testKey)
	plain := randomBytes(9, 5000)
	id := Hash(plain)
	if _, err := a.PutChunk(ctx, id, plain); err != nil {
		t.Fatal(err)
	}
	body, err := a.GetChunkRaw(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutChunkRaw(ctx, id, body); err != nil {
		t.Fatal(err)
	}
	got, err := b.GetChunk(ctx, id)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("copied chunk: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	key := randomBytes(7, KeySize)
	// Make sure the URL-safe alphabet is exercised.
	key[0], key[1], key[2] = 0xfb, 0xff, 0xbf
	std := base64.StdEncoding.EncodeToString(key)
	url := base64.URLEncoding.EncodeToString(key)
	if std == url {
		t.Fatal("test key does not tell the alphabets apart")
	}
	for _, s := range []string{
		hex.EncodeToString(key),
		strings.ToUpper(hex.EncodeToString(key)),
		std, url,
		strings.TrimRight(std, "="), strings.TrimRight(url, "="),
		hex.EncodeToString(key) + "\n",
		"  " + std + "\r\n",
	} {
		got, err := ParseKey(s)
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("ParseKey(%q) = %x, %v", s, got, err)
		}
	}
	secret := "correcthorsebatterystaplesecret"
	for _, s := range []string{
		"",
		hex.EncodeToString(key[:31]),
		hex.EncodeToString(append(bytes.Clone(key), 0)),
		hex.EncodeToString(key)[:63],
		"zz" + hex.EncodeToString(key)[2:],
		base64.StdEncoding.EncodeToString(key[:31]),
		base64.StdEncoding.EncodeToString(append(bytes.Clone(key), 1)),
		secret,
		std[:20] + "*" + std[21:],
	} {
		_, err := ParseKey(s)
		if err == nil {
			t.Errorf("ParseKey(%q): no error", s)
			continue
		}
		if s != "" && strings.Contains(err.Error(), strings.TrimSpace(s)[:8]) {
			t.Errorf("ParseKey error echoes its input: %s", err)
		}
		if !strings.Contains(err.Error(), "hex") || !strings.Contains(err.Error(), "base64") {
			t.Errorf("ParseKey error does not say which forms are accepted: %s", err)
		}
	}
}

func TestPointID(t *testing.T) {
	at := time.Date(2026, 11, 22, 11, 1, 50, 123456789, time.FixedZone("CET", 3600))
	id := NewPointID(at, "3f2a9c1b")
	if id != "2026-11-22T10:01:50.123Z-3f2a9c1b" {
		t.Fatal(id)
	}
	got, err := PointTime(id)
	if err != nil || !got.Equal(at.Truncate(time.Millisecond)) || got.Location() != time.UTC {
		t.Fatalf("PointTime: %v %v", got, err)
	}
	if err := ValidPointID(NewPointID(at, strings.Repeat("z9", 16))); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"",
		"2026-11-22T10:01:50Z",
		"2026-11-22T10:01:50Z-",
		"2026-11-22T10:01:50Z-ABC",
		"2026-11-22T10:01:50Z-a_b",
		"2026-11-22T10:01:50Z-" + strings.Repeat("a", 33),
		"2026-11-22T10:01:50+01:00-abc",
		"2026-11-22T10:01:50.5Z-abc",
		"2026-11-22T10:01:50Z-abc", // ids carry milliseconds
		"2026-13-22T10:01:50Z-abc",
		"2026-11-22t10:01:50Z-abc",
		"2026-11-22T10:01:50Z_abc",
		"../../etc/passwd",
	} {
		if err := ValidPointID(bad); err == nil {
			t.Errorf("ValidPointID(%q): no error", bad)
		}
	}
}

func TestStaging(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, testKey} {
		r, st := newTestRepo(t, key)
		type state struct {
			Done []string
			N    int
		}
		in := state{Done: []string{"a", "b"}, N: 3}
		if err := r.PutStaging(ctx, "restore-1", "progress", in); err != nil {
			t.Fatal(err)
		}
		if err := r.PutStaging(ctx, "restore-1", "plan:v2", in); err != nil {
			t.Fatal(err)
		}
		if err := r.PutStaging(ctx, "restore-10", "progress", in); err != nil {
			t.Fatal(err)
		}
		var out state
		if err := r.GetStaging(ctx, "restore-1", "progress", &out); err != nil || out.N != 3 || len(out.Done) != 2 {
			t.Fatalf("GetStaging: %+v %v", out, err)
		}
		if key != nil {
			// Sealed with its name: moved under another name it does not open.
			st.set("web/staging/restore-1/other.json.zst", st.raw("web/staging/restore-1/progress.json.zst"))
			wantReason(t, r.GetStaging(ctx, "restore-1", "other", &out), drivers.ReasonCorrupt)
		}
		if err := r.DeleteStaging(ctx, "restore-1"); err != nil {
			t.Fatal(err)
		}
		if err := r.GetStaging(ctx, "restore-1", "progress", &out); !errors.Is(err, drivers.ErrNotFound) {
			t.Fatalf("after DeleteStaging: %v", err)
		}
		if err := r.GetStaging(ctx, "restore-10", "progress", &out); err != nil {
			t.Fatalf("DeleteStaging removed another operation's state: %v", err)
		}
		if err := r.DeleteStaging(ctx, "restore-1"); err != nil {
			t.Fatalf("DeleteStaging again: %v", err)
		}
		for _, bad := range [][2]string{{"", "x"}, {"a/b", "x"}, {"..", "x"}, {"op", "."}, {"op", "a b"}, {"op", strings.Repeat("a", 129)}} {
			wantReason(t, r.PutStaging(ctx, bad[0], bad[1], in), drivers.ReasonInvalidInput)
			wantReason(t, r.GetStaging(ctx, bad[0], bad[1], &out), drivers.ReasonInvalidInput)
		}
		wantReason(t, r.PutStaging(ctx, "op", "x", func() {}), drivers.ReasonInvalidInput)
		st.set("web/staging/op/junk.json.zst", []byte("junk"))
		wantReason(t, r.GetStaging(ctx, "op", "junk", &out), drivers.ReasonCorrupt)
	}
}

// BenchmarkSealChunk and BenchmarkOpenChunk measure the encoding of 1 MiB
// chunks (the average size): random data is the worst case for zstd.
func BenchmarkSealChunk(b *testing.B) {
	for _, bc := range benchChunks() {
		b.Run(bc.name, func(b *testing.B) {
			r, _ := newTestRepo(b, bc.key)
			id := Hash(bc.plain)
			b.SetBytes(int64(len(bc.plain)))
			var stored int
			for b.Loop() {
				body, err := r.SealChunk(id, bc.plain)
				if err != nil {
					b.Fatal(err)
				}
				stored = len(body)
			}
			b.ReportMetric(float64(stored)/float64(len(bc.plain)), "ratio")
		})
	}
}

func BenchmarkOpenChunk(b *testing.B) {
	for _, bc := range benchChunks() {
		b.Run(bc.name, func(b *testing.B) {
			r, _ := newTestRepo(b, bc.key)
			id := Hash(bc.plain)
			body, err := r.SealChunk(id, bc.plain)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(bc.plain)))
			for b.Loop() {
				if _, err := r.OpenChunk(id, body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type benchChunk struct {
	name  string
	key   []byte
	plain []byte
}

func benchChunks() []benchChunk {
	random, text := randomBytes(11, 1<<20), textBytes(11, 1<<20)
	return []benchChunk{
		{"random/plain", nil, random},
		{"random/aes", testKey, random},
		{"text/plain", nil, text},
		{"text/aes", testKey, text},
	}
}
