package repo

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// chunkAll returns the chunks of data, copied.
func chunkAll(t *testing.T, r io.Reader, buf []byte) [][]byte {
	t.Helper()
	c, err := NewChunker(r, buf)
	if err != nil {
		t.Fatal(err)
	}
	return drain(t, c)
}

func drain(t *testing.T, c *Chunker) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := c.Next()
		if err == io.EOF {
			if b != nil {
				t.Fatalf("io.EOF with %d bytes", len(b))
			}
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) == 0 {
			t.Fatal("empty chunk")
		}
		out = append(out, bytes.Clone(b))
	}
}

func TestChunkerSpec(t *testing.T) {
	if ChunkerSpec != ChunkAlgorithm+"/262144/1048576/4194304" || ChunkMin != 262144 || ChunkAvg != 1048576 || ChunkMax != 4194304 {
		t.Fatal("ChunkerSpec does not match the chunking constants")
	}
}

func TestChunkerSizes(t *testing.T) {
	data := randomBytes(1, 64<<20)
	chunks := chunkAll(t, bytes.NewReader(data), nil)
	if !bytes.Equal(bytes.Join(chunks, nil), data) {
		t.Fatal("chunks do not add up to the input")
	}
	for i, c := range chunks {
		if len(c) > ChunkMax || (len(c) < ChunkMin && i != len(chunks)-1) {
			t.Fatalf("chunk %d of %d has %d bytes", i, len(chunks), len(c))
		}
	}
	avg := len(data) / len(chunks)
	t.Logf("%d chunks, average %d KiB", len(chunks), avg>>10)
	if avg < 512<<10 || avg > 2<<20 {
		t.Fatalf("average chunk size %d, want 0.5 to 2 MiB", avg)
	}
}

func TestChunkerDeterministic(t *testing.T) {
	data := randomBytes(2, 16<<20)
	a := chunkAll(t, bytes.NewReader(data), nil)
	// Another buffer size and a reader that returns short reads
	// must not move any boundary.
	b := chunkAll(t, iotest.HalfReader(bytes.NewReader(data)), make([]byte, ChunkMax))
	if len(a) != len(b) {
		t.Fatalf("%d chunks, then %d", len(a), len(b))
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			t.Fatalf("chunk %d differs", i)
		}
	}
	if len(a) < 4 {
		t.Fatalf("only %d chunks in 16 MiB", len(a))
	}
}

func TestChunkerShift(t *testing.T) {
	data := randomBytes(3, 32<<20)
	before := map[ID]bool{}
	for _, c := range chunkAll(t, bytes.NewReader(data), nil) {
		before[Hash(c)] = true
	}
	after := chunkAll(t, bytes.NewReader(append([]byte{0x5a}, data...)), nil)
	shared := 0
	for _, c := range after {
		if before[Hash(c)] {
			shared++
		}
	}
	t.Logf("%d of %d chunks shared after inserting a byte at the front", shared, len(after))
	if shared*10 < len(after)*9 {
		t.Fatalf("%d of %d chunks shared, want at least 90%%", shared, len(after))
	}
}

func TestChunkerSmallInputs(t *testing.T) {
	if got := chunkAll(t, bytes.NewReader(nil), nil); len(got) != 0 {
		t.Fatalf("empty input gave %d chunks", len(got))
	}
	for _, n := range []int{1, ChunkMin - 1, ChunkMin, ChunkMin + 1, ChunkMax, ChunkMax + 1} {
		data := randomBytes(uint64(n), n)
		got := chunkAll(t, bytes.NewReader(data), nil)
		if !bytes.Equal(bytes.Join(got, nil), data) {
			t.Fatalf("%d bytes: chunks do not add up", n)
		}
		if n <= ChunkMin && len(got) != 1 {
			t.Fatalf("%d bytes: %d chunks, want 1", n, len(got))
		}
	}
}

func TestChunkerReset(t *testing.T) {
	x, y := randomBytes(4, 6<<20), randomBytes(5, 100)
	c, err := NewChunker(bytes.NewReader(x), nil)
	if err != nil {
		t.Fatal(err)
	}
	first := drain(t, c)
	c.Reset(bytes.NewReader(y))
	if got := drain(t, c); len(got) != 1 || !bytes.Equal(got[0], y) {
		t.Fatalf("after Reset: %d chunks", len(got))
	}
	c.Reset(bytes.NewReader(x))
	if again := drain(t, c); len(again) != len(first) {
		t.Fatalf("after Reset to the first stream: %d chunks, want %d", len(again), len(first))
	}
}

func TestChunkerErrors(t *testing.T) {
	if _, err := NewChunker(bytes.NewReader(nil), make([]byte, ChunkMax-1)); err == nil {
		t.Fatal("small buffer accepted")
	}
	boom := errors.New("boom")
	c, err := NewChunker(io.MultiReader(bytes.NewReader(randomBytes(6, 100)), iotest.ErrReader(boom)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Next(); !errors.Is(err, boom) {
		t.Fatalf("read error: got %v", err)
	}
}
