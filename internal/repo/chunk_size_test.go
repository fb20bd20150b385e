package repo

import (
	"context"
	"strings"
	"testing"
)

// Every chunk the format writes stores within the bounds a reader checks it
// against: a bound too tight would call sound chunks damaged.
func TestStoredBoundsHoldForWhatIsWritten(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, make([]byte, KeySize)} {
		r, st := newTestRepo(t, key)
		sizes := []int{1, 2, 31, 100, 4096, 128<<10 + 1, ChunkMin + 7, ChunkMax}
		for i, n := range sizes {
			for kind, data := range map[string][]byte{
				"zeros":  make([]byte, n),
				"random": randomBytes(uint64(i), n),
				"text":   textBytes(uint64(i), n),
			} {
				id := Hash(data)
				stored, err := r.PutChunk(ctx, id, data)
				if err != nil {
					t.Fatal(err)
				}
				if got := int64(len(st.objs[r.key(ChunkKey(id))])); got != stored {
					t.Fatalf("stored %d, object %d", stored, got)
				}
				if err := r.CheckStoredSize(id, int64(n), stored); err != nil {
					t.Errorf("encrypted %v, %d %s bytes stored in %d: %v", key != nil, n, kind, stored, err)
				}
				if err := r.CheckStoredSize(id, 0, stored); err != nil {
					t.Errorf("any-size bounds: %d %s bytes stored in %d: %v", n, kind, stored, err)
				}
			}
		}
	}
}

func TestCheckStoredSizeFindsEmptyCutAndSwappedObjects(t *testing.T) {
	for _, key := range [][]byte{nil, make([]byte, KeySize)} {
		r, _ := newTestRepo(t, key)
		data := randomBytes(7, 1<<20)
		id := Hash(data)
		body, err := r.SealChunk(id, data)
		if err != nil {
			t.Fatal(err)
		}
		for what, size := range map[string]int64{
			"empty":                       0,
			"a few bytes":                 5,
			"cut to 30 bytes":             30, // a 1 MiB chunk takes 8 blocks of 4 bytes at least
			"another, larger chunk's":     int64(len(body)) * 2,
			"cut below any chunk's frame": 9,
		} {
			err := r.CheckStoredSize(id, int64(len(data)), size)
			wantReason(t, err, "Corrupt")
			if !strings.Contains(err.Error(), id.String()) || !strings.Contains(err.Error(), "damaged") {
				t.Errorf("%s: error %q does not name the chunk and the damage", what, err)
			}
		}
		// A cut that leaves more than zstd's least is found by reading
		// only (OpenChunk); compressible data may shrink to almost nothing.
		if err := r.CheckStoredSize(id, int64(len(data)), int64(len(body)/10)); err != nil {
			t.Errorf("a tenth of a 1 MiB chunk is a size some 1 MiB chunk has, yet: %v", err)
		}
		if err := r.CheckStoredSize(id, 0, 0); err == nil {
			t.Error("an empty object passed as some chunk")
		}
	}
}

func TestCheckPresentNamesTheChunkTheFileAndWhatToDo(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	a, b := randomBytes(1, 1000), randomBytes(2, 1000)
	ida, idb := Hash(a), Hash(b)
	needs := []ChunkNeed{{ID: ida, Size: 1000, Path: "a.bin"}, {ID: idb, Size: 1000, Path: "b.bin"}}
	body, _ := r.SealChunk(ida, a)

	if err := r.CheckPresent("commit p", needs, map[ID]int64{ida: int64(len(body)), idb: int64(len(body))}); err != nil {
		t.Fatalf("sound chunks: %v", err)
	}
	err := r.CheckPresent("commit p", needs, map[ID]int64{ida: int64(len(body))})
	wantReason(t, err, ReasonMissingChunk)
	for _, want := range []string{idb.String(), `"b.bin"`, "1 missing and 0 damaged of 2", "drorch check", "new backup"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing chunk: error %q lacks %q", err, want)
		}
	}
	err = r.CheckPresent("commit p", needs, map[ID]int64{ida: 0, idb: int64(len(body))})
	wantReason(t, err, "Corrupt")
	if !strings.Contains(err.Error(), ida.String()) || !strings.Contains(err.Error(), `"a.bin"`) {
		t.Errorf("empty chunk: error %q does not name it and its file", err)
	}
}

// Damage recorded by check keeps a chunk out of the set a writer trusts,
// until a write of the chunk clears the record.
func TestDamageRecordsAndUsableChunks(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	var ids []ID
	for i := range 3 {
		data := randomBytes(uint64(10+i), 5000)
		id := Hash(data)
		if _, err := r.PutChunk(ctx, id, data); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	st.objs[r.key(ChunkKey(ids[2]))] = nil // emptied behind drorch's back
	if err := r.MarkDamaged(ctx, Damage{Chunk: ids[1], Problem: "damaged: content does not match"}); err != nil {
		t.Fatal(err)
	}
	usable, err := r.UsableChunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := usable[ids[0]]; !ok || len(usable) != 1 {
		t.Fatalf("usable chunks %v, want only the sound one", usable)
	}
	if d, _ := r.Damaged(ctx); len(d) != 1 {
		t.Fatalf("damage records %v, want one", d)
	}
	// The next backup writes it again: the record goes.
	data := randomBytes(11, 5000)
	if _, err := r.PutChunk(ctx, ids[1], data); err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Damaged(ctx); len(d) != 0 {
		t.Fatalf("damage records %v after the chunk was written again, want none", d)
	}
}
