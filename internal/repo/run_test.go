package repo

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// Cutting a run as files arrive gives the chunks of their concatenation
// chunked in one go, whatever the file sizes.
func TestRunCutsLikeOneStream(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	var all []byte
	var files [][]byte
	for len(all) < 13<<20 {
		n := rnd.IntN(300 << 10)
		if rnd.IntN(50) == 0 {
			n = 0
		}
		f := make([]byte, n)
		for i := range f {
			f[i] = byte(rnd.Uint32())
		}
		if rnd.IntN(10) == 0 { // some runs of zeros and repeats
			clear(f[:n/2])
		}
		files = append(files, f)
		all = append(all, f...)
	}
	type cut struct {
		off int64
		id  ID
		n   int
	}
	var want []cut
	ch, err := NewChunker(bytes.NewReader(all), nil)
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for {
		data, err := ch.Next()
		if len(data) > 0 {
			want = append(want, cut{off, Hash(data), len(data)})
			off += int64(len(data))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var got []cut
	maxBuf := 0
	var r *Run
	r, err = NewRun(func(data []byte, off int64) error {
		got = append(got, cut{off, Hash(data), len(data)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var written int64
	for _, f := range files {
		if r.Offset() != written {
			t.Fatalf("offset %d before a file, want %d", r.Offset(), written)
		}
		written += int64(len(f))
		if err := r.Write(f); err != nil {
			t.Fatal(err)
		}
		maxBuf = max(maxBuf, cap(r.buf))
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(want) < 8 {
		t.Fatalf("%d chunks, want %d (more than 8)", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("chunk %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if maxBuf > 2*ChunkMax {
		t.Fatalf("run buffer grew to %d bytes, more than 2 × ChunkMax", maxBuf)
	}
	if r.Offset() != 0 {
		t.Fatalf("offset %d after Flush, want 0", r.Offset())
	}
}
