package repo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
)

// A commit whose check fails permanently abandons its point at once: no
// pending entry is left to hold every sweep back for a week.
func TestCommitCheckFailureLetsSweepsGo(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ctx := context.Background()
	ids := putChunks(t, r, "garbage")
	gc(t, r, GCOptions{})
	p := NewPointID(time.Now(), "p")
	err := r.CommitPoint(ctx, pointManifest(r, p, 0), func(context.Context) error {
		return drivers.Permanentf(ReasonMissingChunk, "commit %s: chunk x is not there", p)
	})
	if reason, _ := drivers.IsPermanent(err); reason != ReasonMissingChunk || !strings.Contains(err.Error(), "Garbage collection may have removed") ||
		!strings.Contains(err.Error(), "run the backup again") {
		t.Fatalf("commit error: %v", err)
	}
	e, err := r.GetEpoch(ctx)
	if err != nil || len(e.Pending) != 0 || e.abandoned(p) == nil {
		t.Fatalf("after a failed check: pending %+v abandoned %+v (%v)", e.Pending, e.Abandoned, err)
	}
	if res := gc(t, r, GCOptions{}); !res.Swept || res.Deleted != 1 || present(t, r, ids[0]) {
		t.Fatalf("a failed commit held the sweep back: %+v", res)
	}
	// A transient failure keeps the entry: the retry renews it.
	q := NewPointID(time.Now().Add(time.Second), "q")
	if err := r.CommitPoint(ctx, pointManifest(r, q, 0), func(context.Context) error { return context.DeadlineExceeded }); err == nil {
		t.Fatal("no error")
	}
	if e, _ := r.GetEpoch(ctx); e.pending(q) == nil {
		t.Fatalf("a transient failure dropped the pending entry: %+v", e)
	}
}

// A pending entry older than the commit window plus the allowed skew is a
// gone writer's: it does not hold sweeps back; its renewal is refused
// during a sweep.
func TestGCIgnoresGonePending(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ctx := context.Background()
	putChunks(t, r, "garbage")
	gc(t, r, GCOptions{})
	p := NewPointID(time.Now(), "p")
	if _, err := r.UpdateEpoch(ctx, func(e *Epoch) error {
		e.Pending = append(e.Pending, PendingPoint{Point: p, Since: time.Now().Add(-pendingLive - time.Minute).UTC()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if res := gc(t, r, GCOptions{}); !res.Swept || res.Deleted != 1 {
		t.Fatalf("a gone writer's entry held the sweep back: %+v", res)
	}
	lease, why, err := r.takeSweep(ctx, "")
	if err != nil || lease == nil {
		t.Fatalf("take: %v %q", err, why)
	}
	if _, _, err := r.reserve(ctx, p, 0); err == nil || !strings.Contains(err.Error(), "garbage collection has been deleting") {
		t.Fatalf("a renewal during a sweep: %v", err)
	}
}

// A retry of a run takes over its own lease once the attempt before has
// surely stopped deleting; another run is refused and told when it expires.
func TestGCSweepLeaseRetakenByRetry(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	ctx := context.Background()
	if l, why, err := r.takeSweep(ctx, "wf/run/7"); err != nil || l == nil {
		t.Fatalf("take: %v %q", err, why)
	}
	if _, _, err := r.takeSweep(ctx, "wf/run/7"); err == nil || !strings.Contains(err.Error(), "may still be deleting until") {
		t.Fatalf("a retry took a lease its previous attempt may still use: %v", err)
	}
	if _, err := r.UpdateEpoch(ctx, func(e *Epoch) error { e.Sweep.Since = e.Sweep.Since.Add(-sweepMax - 2*time.Minute); return nil }); err != nil {
		t.Fatal(err)
	}
	_, why, err := r.takeSweep(ctx, "other")
	if err != nil || !strings.Contains(why, "another garbage collection is sweeping") || !strings.Contains(why, "expires at") {
		t.Fatalf("another run: %v %q", err, why)
	}
	if l, why, err := r.takeSweep(ctx, "wf/run/7"); err != nil || l == nil {
		t.Fatalf("the retry did not take its own lease over: %v %q", err, why)
	}
}

// A chunk marked long ago, then named by a point that is forgotten before
// any run saw it, is not deleted at once: its mark starts anew.
func TestGCForgottenPointRestartsMargin(t *testing.T) {
	gcMargin(t, time.Hour)
	r, _ := newTestRepo(t, nil)
	ctx := context.Background()
	ids := putChunks(t, r, "x")
	gc(t, r, GCOptions{})
	m, err := r.readMark(ctx)
	if err != nil || len(m.ids) != 1 {
		t.Fatalf("mark: %+v %v", m, err)
	}
	m.times[0] = time.Now().Add(-2 * time.Hour).UnixMilli() // marked 2 h ago
	if err := r.writeMark(ctx, m); err != nil {
		t.Fatal(err)
	}
	p := NewPointID(time.Now(), "p")
	commitNaming(t, r, p, ids[0]) // a backup found x stored and named it
	if err := r.ForgetPoint(ctx, p); err != nil {
		t.Fatal(err)
	}
	if res := gc(t, r, GCOptions{}); res.Deleted != 0 || !present(t, r, ids[0]) {
		t.Fatalf("a chunk named until just now was deleted: %+v", res)
	}
	// The copy of the manifest is gone; the margin is counted from now.
	if pts, err := r.listPoints(ctx, gcForgottenDir, nil); err != nil || len(pts) != 0 {
		t.Fatalf("copies left: %v %v", pts, err)
	}
	gcMargin(t, 0)
	if res := gc(t, r, GCOptions{}); res.Deleted != 2 || present(t, r, ids[0]) {
		t.Fatalf("later: %+v, want it and the point's entry part deleted", res)
	}
}

// The abandoned manifests that epoch.json's housekeeping deletes restart
// the margin of their chunks too.
func TestGCAbandonedManifestRestartsMargin(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	ctx := context.Background()
	p := NewPointID(time.Now(), "p")
	commitNaming(t, r, p, putChunks(t, r, "x")...)
	if _, err := r.UpdateEpoch(ctx, func(e *Epoch) error {
		e.Abandoned = append(e.Abandoned, AbandonedPoint{Point: p, At: time.Now().Add(-keepAbandoned - time.Hour).UTC()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateEpoch(ctx, func(*Epoch) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if has, _ := r.storedManifest(ctx, p); has {
		t.Fatal("the aged manifest was not deleted")
	}
	if pts, err := r.listPoints(ctx, gcForgottenDir, nil); err != nil || len(pts) != 1 || pts[0] != p {
		t.Fatalf("no copy left for garbage collection: %v %v", pts, err)
	}
}

// The scan runs without the lease (commits go on meanwhile); under the
// lease, the manifests committed since are read before deleting.
func TestGCScansBeforeTheLease(t *testing.T) {
	gcMargin(t, 0)
	r, _ := newTestRepo(t, nil)
	ids := putChunks(t, r, "kept", "x")
	commitNaming(t, r, NewPointID(time.Now(), "a"), ids[0])
	gc(t, r, GCOptions{}) // marks x
	q := NewPointID(time.Now().Add(time.Second), "q")
	once := false
	res := gc(t, r, GCOptions{Progress: func(stage string, n int64) {
		if stage == "manifests" && !once {
			once = true
			commitNaming(t, r, q, ids[1]) // during the scan: not refused
		}
	}})
	if !once || !res.Swept || res.Deleted != 0 || !present(t, r, ids[1]) {
		t.Fatalf("a chunk named by a point committed during the scan: %+v", res)
	}
}

// A manifest whose keys encoding/json would read as "id" but the lexer
// would not is refused rather than scanned with ids missing.
func TestScanManifestRefusesOddKeys(t *testing.T) {
	r, _ := newTestRepo(t, nil)
	m := testManifest(r.Encryption())
	plain, err := EncodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"ID":`, `"Id":`, `"\u0069d":`} {
		odd := bytes.Replace(plain, []byte(`"id":`), []byte(k), 1)
		if bytes.Equal(odd, plain) {
			t.Fatal("no id key in the manifest")
		}
		_, err := scanManifest(bytes.NewReader(odd), r.plan, m.Point, func(ID) {})
		if err == nil || !strings.Contains(err.Error(), "a key with an escape") {
			t.Fatalf("%s: %v", k, err)
		}
	}
}

// A commit whose check took longer than the commit window (so that a sweep
// may have taken its entry for a gone writer's) checks again once it has
// renewed its entry, and fails if a chunk went meanwhile.
func TestCommitChecksAgainAfterALongCheck(t *testing.T) {
	oldR, oldC := renewAfter, recheckAfter
	renewAfter, recheckAfter = 0, 0
	t.Cleanup(func() { renewAfter, recheckAfter = oldR, oldC })
	r, _ := newTestRepo(t, nil)
	calls := 0
	err := r.CommitPoint(context.Background(), pointManifest(r, NewPointID(time.Now(), "p"), 0), func(context.Context) error {
		if calls++; calls > 1 {
			return drivers.Permanentf(ReasonMissingChunk, "chunk x went")
		}
		return nil
	})
	if calls != 2 || err == nil {
		t.Fatalf("checked %d times, error %v; want a second check that fails", calls, err)
	}
}
