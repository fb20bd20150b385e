package repo

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/store"
)

// agedStore is a memStore whose listing says when each object was stored,
// as S3's does, with a clock the test can turn back per object; and a hook
// that runs once the manifests are next listed (a commit right after a run
// listed them).
type agedStore struct {
	*memStore
	mu       sync.Mutex
	mod      map[string]time.Time
	onListed func()
}

func (s *agedStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	s.stamp(key)
	return s.memStore.Put(ctx, key, r, size)
}

func (s *agedStore) PutIf(ctx context.Context, key string, r io.Reader, size int64, cond store.Condition) (string, error) {
	etag, err := s.memStore.PutIf(ctx, key, r, size, cond)
	if err == nil {
		s.stamp(key)
	}
	return etag, err
}

func (s *agedStore) stamp(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mod[key] = time.Now()
}

func (s *agedStore) List(ctx context.Context, prefix string, fn func(store.Object) error) error {
	err := s.memStore.List(ctx, prefix, func(o store.Object) error {
		s.mu.Lock()
		o.Modified = s.mod[o.Key]
		s.mu.Unlock()
		return fn(o)
	})
	s.mu.Lock()
	hook := s.onListed
	if strings.HasSuffix(prefix, "/"+pointsDir) {
		s.onListed = nil
	} else {
		hook = nil
	}
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return err
}

func newAgedRepo(t *testing.T, key []byte) (*Repo, *agedStore) {
	t.Helper()
	st := &agedStore{memStore: newMemStore(), mod: map[string]time.Time{}}
	r, err := New(st, "web", key)
	if err != nil {
		t.Fatal(err)
	}
	return r, st
}

// putWALAged stores the WAL files, as stored d ago.
func putWALAged(t *testing.T, r *Repo, st *agedStore, d time.Duration, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := r.PutWAL(context.Background(), n, []byte("wal "+n)); err != nil {
			t.Fatal(err)
		}
		st.mu.Lock()
		st.mod[r.key(WALKey(n))] = time.Now().Add(-d)
		st.mu.Unlock()
	}
}

// commitBase commits a postgres base backup point whose backup_label starts
// at the WAL file start; with start "" a logical dump (no backup_label).
func commitBase(t *testing.T, r *Repo, point, start string) {
	t.Helper()
	m := r.NewManifest(point, "dc1", SourcePostgres, time.Now(), 0)
	m.Entries = []Entry{{Path: ".", Type: source.TypeDir, Mode: 0o700}}
	if start != "" {
		label := fmt.Sprintf("START WAL LOCATION: 0/%s028 (file %s)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n", start[16:], start)
		ids := putChunks(t, r, label)
		m.Entries = append(m.Entries, Entry{Path: BackupLabel, Type: source.TypeFile, Mode: 0o600, Size: int64(len(label)),
			Chunks: []Ref{{ID: ids[0], Size: int64(len(label))}}})
	} else {
		ids := putChunks(t, r, "dump "+point)
		m.Entries = append(m.Entries, Entry{Path: "db.dump", Type: source.TypeFile, Mode: 0o600, Size: int64(len("dump " + point)),
			Chunks: []Ref{{ID: ids[0], Size: int64(len("dump " + point))}}})
	}
	m.ComputeTotals()
	if err := r.CommitPoint(context.Background(), m, nil); err != nil {
		t.Fatal(err)
	}
}

func walNames(t *testing.T, r *Repo) []string {
	t.Helper()
	var names []string
	if err := r.ListWAL(context.Background(), "", func(f WALFile) error { names = append(names, f.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	return names
}

func collectWAL(t *testing.T, r *Repo, opt WALOptions) WALResult {
	t.Helper()
	res, err := r.CollectWAL(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// A history with three timelines: timeline 2 branched from 1 in segment
// 0x1F, timeline 3 from 1 in segment 0x05 (a point-in-time recovery back
// in time), with segments of every timeline well past those points.
var walHistory = []string{
	"000000010000000000000005",
	"00000001000000000000000E",
	"00000001000000000000000F",
	"000000010000000000000010",
	"000000010000000000000010.00000028.backup",
	"00000001000000000000001F",
	"00000001000000000000001F.partial",
	"000000010000000000000020",
	"000000010000000000000021",
	"00000002.history",
	"00000002000000000000001F",
	"000000020000000000000020",
	"000000020000000000000020.00000028.backup",
	"000000020000000000000021",
	"00000003.history",
	"000000030000000000000005",
	"000000030000000000000025",
}

// TestWALRetentionTimelines: a WAL file is kept when a stored base backup
// may replay it (its timeline or a later one, at or after its start), a
// history file always; everything else stored long enough ago goes.
func TestWALRetentionTimelines(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, KeySize)} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			gcMargin(t, time.Hour)
			r, st := newAgedRepo(t, key)
			old := NewPointID(time.Now().Add(-2*time.Hour), "old")
			commitBase(t, r, old, "000000010000000000000010")
			commitBase(t, r, NewPointID(time.Now().Add(-time.Hour), "dump"), "") // logical: needs no WAL
			commitNaming(t, r, NewPointID(time.Now().Add(-time.Hour), "dir"))    // another source
			newer := NewPointID(time.Now(), "new")
			commitBase(t, r, newer, "000000020000000000000020")
			putWALAged(t, r, st, 2*time.Hour, walHistory...)

			res := collectWAL(t, r, WALOptions{})
			wantGone := []string{"000000010000000000000005", "00000001000000000000000E", "00000001000000000000000F", "000000030000000000000005"}
			if got := walNames(t, r); !slices.Equal(got, without(walHistory, wantGone...)) {
				t.Fatalf("with both base backups kept, left %v\nwant %v gone", got, wantGone)
			}
			if res.Bases != 2 || res.KeptFrom != "000000010000000000000010" || res.KeptFromPoint != old || res.Deleted != 4 || !res.Swept ||
				res.First != "000000010000000000000005" || res.Last != "000000030000000000000005" || res.Files != len(walHistory) {
				t.Fatalf("result %+v", res)
			}

			// Forget the older base backup: only timeline 2 and later from
			// 0x20 on stay, and the history files.
			if err := r.ForgetPoint(context.Background(), old); err != nil {
				t.Fatal(err)
			}
			res = collectWAL(t, r, WALOptions{})
			want := []string{"00000002.history", "000000020000000000000020", "000000020000000000000020.00000028.backup",
				"000000020000000000000021", "00000003.history", "000000030000000000000025"}
			if got := walNames(t, r); !slices.Equal(got, want) {
				t.Fatalf("with the timeline 2 base backup kept, left %v\nwant %v", got, want)
			}
			if res.KeptFrom != "000000020000000000000020" || res.KeptFromPoint != newer || res.Deleted != 7 {
				t.Fatalf("result %+v", res)
			}
			if ep, err := r.GetEpoch(context.Background()); err != nil || ep.Sweep != nil {
				t.Fatalf("the sweep lease was not let go: %+v %v", ep.Sweep, err)
			}
		})
	}
}

func without(all []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
}

// TestWALRetentionMargin: a file no base backup needs is kept until it was
// stored GCMargin ago.
func TestWALRetentionMargin(t *testing.T) {
	gcMargin(t, time.Hour)
	r, st := newAgedRepo(t, nil)
	commitBase(t, r, NewPointID(time.Now(), "a"), "000000010000000000000010")
	putWALAged(t, r, st, 2*time.Hour, "00000001000000000000000E")
	putWALAged(t, r, st, 59*time.Minute, "00000001000000000000000F")
	putWALAged(t, r, st, 0, "000000010000000000000010")
	res := collectWAL(t, r, WALOptions{})
	if got := walNames(t, r); !slices.Equal(got, []string{"00000001000000000000000F", "000000010000000000000010"}) || res.Deleted != 1 || res.Young != 1 {
		t.Fatalf("left %v, result %+v: want only the file older than the margin deleted", got, res)
	}
	putWALAged(t, r, st, 2*time.Hour, "00000001000000000000000F")
	if res := collectWAL(t, r, WALOptions{}); res.Deleted != 1 || res.Young != 0 {
		t.Fatalf("once old enough: %+v", res)
	}
}

// TestWALRetentionKeepsAllWithoutBase: with no base backup stored (none,
// or only other sources and logical dumps), every WAL file is kept.
func TestWALRetentionKeepsAllWithoutBase(t *testing.T) {
	gcMargin(t, 0)
	r, st := newAgedRepo(t, nil)
	putWALAged(t, r, st, 48*time.Hour, "000000010000000000000001", "000000010000000000000002")
	if res := collectWAL(t, r, WALOptions{}); res.Deleted != 0 || res.Bases != 0 || res.KeptFrom != "" || len(walNames(t, r)) != 2 {
		t.Fatalf("empty repository: %+v", res)
	}
	commitBase(t, r, NewPointID(time.Now(), "dump"), "")
	commitNaming(t, r, NewPointID(time.Now(), "dir"))
	if res := collectWAL(t, r, WALOptions{}); res.Deleted != 0 || res.Bases != 0 || len(walNames(t, r)) != 2 {
		t.Fatalf("no base backup: %+v", res)
	}
}

// TestWALRetentionPendingCommit: nothing is deleted while a commit is
// pending (its base backup may need older WAL than any stored one), and a
// base backup committed while a run reads protects its WAL.
func TestWALRetentionPendingCommit(t *testing.T) {
	gcMargin(t, 0)
	r, st := newAgedRepo(t, nil)
	commitBase(t, r, NewPointID(time.Now(), "new"), "000000010000000000000010")
	putWALAged(t, r, st, time.Hour, "00000001000000000000000E", "00000001000000000000000F", "000000010000000000000010")

	pending := NewPointID(time.Now(), "pending")
	if _, _, err := r.reserve(context.Background(), pending, 0); err != nil {
		t.Fatal(err)
	}
	res := collectWAL(t, r, WALOptions{})
	if res.Deleted != 0 || res.Swept || !strings.Contains(res.NoSweep, "being committed") || len(walNames(t, r)) != 3 {
		t.Fatalf("a run deleted WAL while a commit was pending: %+v", res)
	}
	if res := collectWAL(t, r, WALOptions{DryRun: true}); res.Deleted != 0 || res.NoSweep == "" {
		t.Fatalf("dry run while pending: %+v", res)
	}
	if _, err := r.UpdateEpoch(context.Background(), func(e *Epoch) error { e.Pending = nil; return nil }); err != nil {
		t.Fatal(err)
	}

	// A base backup needing 0x0F commits after the run listed the manifests.
	st.onListed = func() { commitBase(t, r, NewPointID(time.Now(), "late"), "00000001000000000000000F") }
	res = collectWAL(t, r, WALOptions{})
	if got := walNames(t, r); !slices.Equal(got, []string{"00000001000000000000000F", "000000010000000000000010"}) || res.Deleted != 1 {
		t.Fatalf("left %v, result %+v: want only 0x0E deleted", got, res)
	}
}

// TestWALRetentionDryRunAndNoSweep: a dry run says what would go, counting
// the points it would forget as gone, and deletes nothing; a run told not
// to sweep (a restore reads) deletes nothing.
func TestWALRetentionDryRunAndNoSweep(t *testing.T) {
	gcMargin(t, 0)
	r, st := newAgedRepo(t, nil)
	old := NewPointID(time.Now().Add(-time.Hour), "old")
	commitBase(t, r, old, "000000010000000000000010")
	commitBase(t, r, NewPointID(time.Now(), "new"), "000000010000000000000012")
	putWALAged(t, r, st, time.Hour, "00000001000000000000000F", "000000010000000000000010", "000000010000000000000011", "000000010000000000000012")
	res := collectWAL(t, r, WALOptions{DryRun: true, Forgotten: map[string]bool{old: true}})
	if res.Deleted != 3 || res.First != "00000001000000000000000F" || res.Last != "000000010000000000000011" || res.Freed == 0 || res.KeptFrom != "000000010000000000000012" {
		t.Fatalf("dry run: %+v", res)
	}
	if len(walNames(t, r)) != 4 {
		t.Fatal("a dry run deleted WAL")
	}
	res = collectWAL(t, r, WALOptions{NoSweep: "a restore is running"})
	if res.Deleted != 0 || res.NoSweep != "a restore is running" || len(walNames(t, r)) != 4 {
		t.Fatalf("no sweep: %+v", res)
	}
	if res := collectWAL(t, r, WALOptions{}); res.Deleted != 1 || len(walNames(t, r)) != 3 {
		t.Fatalf("with both points: %+v", res)
	}
}
