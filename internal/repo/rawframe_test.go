package repo

import (
	"bytes"
	"testing"
)

// TestRawFrame: the frames of incompressible chunks are standard zstd: the
// decoder drorch has always used reads them back, and so does the fast path;
// the fast path reads klauspost's own frames of incompressible data
// (written before raw frames existed) as the decoder does, and leaves
// every other frame to the decoder.
func TestRawFrame(t *testing.T) {
	if err := codecs(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 1000, zstdBlockMax - 1, zstdBlockMax, zstdBlockMax + 1, 3*zstdBlockMax + 7, ChunkMax} {
		plain := randomBytes(uint64(n), n)
		f := rawFrame(plain, nil)
		blocks := max(1, (n+zstdBlockMax-1)/zstdBlockMax)
		if len(f) != 9+3*blocks+n {
			t.Errorf("%d bytes: frame of %d bytes, want %d", n, len(f), 9+3*blocks+n)
		}
		if lo, hi := zstdMin(int64(n)), zstdBound(int64(n)); n > 0 && (int64(len(f)) < lo || int64(len(f)) > hi) {
			t.Errorf("%d bytes: frame of %d bytes is outside the stored bounds %d..%d", n, len(f), lo, hi)
		}
		dec, err := chunkDec.DecodeAll(f, nil)
		if err != nil || !bytes.Equal(dec, plain) {
			t.Fatalf("%d bytes: the zstd decoder: %v, equal %v", n, err, bytes.Equal(dec, plain))
		}
		for _, own := range []bool{false, true} {
			in := bytes.Clone(f)
			got, ok := rawFrameContent(in, own)
			if !ok || !bytes.Equal(got, plain) {
				t.Fatalf("%d bytes, own %v: fast path ok %v, equal %v", n, own, ok, bytes.Equal(got, plain))
			}
			if !own && !bytes.Equal(in, f) {
				t.Fatalf("%d bytes: the fast path changed a frame it does not own", n)
			}
		}
		// What the encoder wrote for such data before: the fast path must
		// agree with the decoder on it, or leave it to the decoder.
		old := encoder.EncodeAll(plain, nil)
		if got, ok := rawFrameContent(bytes.Clone(old), true); ok && !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: the fast path misreads the encoder's frame", n)
		}
	}
	text := textBytes(9, 300<<10)
	z := encoder.EncodeAll(text, nil)
	if _, ok := rawFrameContent(z, false); ok {
		t.Fatal("the fast path took a compressed frame")
	}
	f := rawFrame(randomBytes(1, 200<<10), nil)
	for name, bad := range map[string][]byte{
		"cut short":      f[:len(f)-1],
		"trailing bytes": append(bytes.Clone(f), 0),
		"second frame":   append(bytes.Clone(f), f...),
		"wrong size":     func() []byte { b := bytes.Clone(f); b[5]++; return b }(),
		"checksum flag":  func() []byte { b := bytes.Clone(f); b[4] |= 0b100; return b }(),
		"header only":    f[:9],
		"empty":          nil,
	} {
		if _, ok := rawFrameContent(bytes.Clone(bad), true); ok {
			t.Errorf("%s: the fast path accepted it", name)
		}
	}
}

// TestIncompressible: random data is stored in raw blocks; text, zeros and
// a chunk of which a quarter compresses are compressed as before.
func TestIncompressible(t *testing.T) {
	if err := codecs(); err != nil {
		t.Fatal(err)
	}
	mixed := randomBytes(2, 1<<20)
	copy(mixed[600<<10:], textBytes(3, 256<<10))
	for _, c := range []struct {
		name  string
		plain []byte
		want  bool
	}{
		{"random", randomBytes(1, 1<<20), true},
		{"random, small", randomBytes(1, sampleMin-1), false}, // not judged: compressed
		{"text", textBytes(1, 1<<20), false},
		{"zeros", make([]byte, 1<<20), false},
		{"random with a quarter of text", mixed, false},
		{"a repeated random block", bytes.Repeat(randomBytes(4, 4<<10), 256), false},
	} {
		if got := incompressible(c.plain); got != c.want {
			t.Errorf("%s: incompressible %v, want %v", c.name, got, c.want)
		}
	}
}

// BenchmarkIncompressible is the cost of judging a chunk of 1 MiB.
func BenchmarkIncompressible(b *testing.B) {
	if err := codecs(); err != nil {
		b.Fatal(err)
	}
	for _, bc := range benchChunks() {
		if bc.key != nil {
			continue
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.plain)))
			for b.Loop() {
				incompressible(bc.plain)
			}
		})
	}
}

// TestIncompressibleWAL: a WAL segment of 16 MiB that does not compress is
// still a frame the WAL decoder (window ChunkMax) reads, with or without a
// key; so is a small one stored in raw blocks.
func TestIncompressibleWAL(t *testing.T) {
	for _, key := range [][]byte{nil, testKey} {
		r, _ := newTestRepo(t, key)
		for _, n := range []int{16 << 20, 1 << 20} {
			plain := randomBytes(uint64(n), n)
			body, err := r.SealWAL("000000010000000000000001", plain)
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.OpenWAL("000000010000000000000001", body)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("key %v, %d bytes: OpenWAL: %v, equal %v", key != nil, n, err, bytes.Equal(got, plain))
			}
		}
	}
}
