package repo

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/drorch/drorch/drivers"
)

func TestWALPutGetListDelete(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, 32)} {
		r, st := newTestRepo(t, key)
		ctx := context.Background()
		seg := bytes.Repeat([]byte("wal record "), 100000)
		stored, err := r.PutWAL(ctx, "000000010000000000000003", seg)
		if err != nil || !stored {
			t.Fatalf("first push: stored %v, err %v", stored, err)
		}
		// PostgreSQL pushes a segment again after a crash: accepted, not stored twice.
		if stored, err := r.PutWAL(ctx, "000000010000000000000003", seg); err != nil || stored {
			t.Fatalf("duplicate push: stored %v, err %v", stored, err)
		}
		other := append([]byte("x"), seg[1:]...)
		_, err = r.PutWAL(ctx, "000000010000000000000003", other)
		if !errors.Is(err, ErrWALConflict) || !permanent(err) {
			t.Fatalf("a different segment under the same name: got %v, want a permanent ErrWALConflict", err)
		}
		got, err := r.GetWAL(ctx, "000000010000000000000003")
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("get: %d bytes, err %v", len(got), err)
		}
		if _, err := r.PutWAL(ctx, "00000002.history", []byte("1\t0/3000000\tno recovery target specified\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := r.PutWAL(ctx, "../etc/passwd", seg); err == nil {
			t.Fatal("a name that is not a WAL file name was stored")
		}
		var names []string
		if err := r.ListWAL(ctx, "000000010000000000000004", func(f WALFile) error { names = append(names, f.Name); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(names) != 1 || names[0] != "00000002.history" {
			t.Fatalf("list from the segment: %v", names)
		}
		names = nil
		if err := r.ListWAL(ctx, "", func(f WALFile) error { names = append(names, f.Name); return nil }); err != nil || len(names) != 2 {
			t.Fatalf("list all: %v, %v", names, err)
		}

		// A flipped byte anywhere is caught, naming the object.
		k := r.key(WALKey("000000010000000000000003"))
		for _, at := range []int{0, 40, len(st.objs[k]) - 1} {
			st.objs[k][at] ^= 1
			_, err := r.GetWAL(ctx, "000000010000000000000003")
			if !permanent(err) || !bytes.Contains([]byte(err.Error()), []byte("000000010000000000000003")) {
				t.Fatalf("corrupted at %d: got %v", at, err)
			}
			st.objs[k][at] ^= 1
		}
		// Neither is a damaged stored copy taken for a duplicate.
		st.objs[k][50] ^= 1
		if _, err := r.PutWAL(ctx, "000000010000000000000003", seg); !permanent(err) {
			t.Fatalf("duplicate push over a damaged copy: got %v", err)
		}
		st.objs[k][50] ^= 1

		if err := r.DeleteWAL(ctx, "000000010000000000000003"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.GetWAL(ctx, "000000010000000000000003"); !drivers.IsNotFound(err) {
			t.Fatalf("after delete: %v", err)
		}
	}
}

func TestValidWALName(t *testing.T) {
	for _, ok := range []string{"000000010000000000000003", "00000002.history", "000000010000000000000003.partial", "000000010000000000000002.00000028.backup"} {
		if err := ValidWALName(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "00000001000000000000000", "000000010000000000000003x", "0000000100000000000000g3", "a/000000010000000000000003", "00000002.History"} {
		if ValidWALName(bad) == nil {
			t.Errorf("%q taken for a WAL file name", bad)
		}
	}
}

func permanent(err error) bool { _, ok := drivers.IsPermanent(err); return ok }

func TestStartWAL(t *testing.T) {
	label := "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n"
	if name, err := StartWAL([]byte(label)); err != nil || name != "000000010000000000000002" {
		t.Fatalf("got %q, %v", name, err)
	}
	for _, bad := range []string{"", "START WAL LOCATION: 0/2000028\n", "START WAL LOCATION: 0/2000028 (file 0000000100000000000002)\n"} {
		if _, err := StartWAL([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
