package activities

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/store"
	"github.com/drorch/drorch/internal/repo"
)

// slowListStore lists slowly, as a repository of millions of chunks does:
// each object of a chunk listing comes after a pause; and it reads chunks
// slowly, as a point's entries of a hundred million files take long to
// read. It tells whether a chunk listing or read is running.
type slowListStore struct {
	store.Store
	perObject time.Duration
	perGet    time.Duration
	listing   *atomic.Int64
	reading   *atomic.Int64
}

func (s *slowListStore) GetObject(ctx context.Context, key string) (io.ReadCloser, store.Object, error) {
	if strings.Contains(key, "/chunks/") {
		s.reading.Add(1)
		defer s.reading.Add(-1)
		select {
		case <-time.After(s.perGet):
		case <-ctx.Done():
			return nil, store.Object{}, ctx.Err()
		}
	}
	return s.Store.GetObject(ctx, key)
}

func (s *slowListStore) List(ctx context.Context, prefix string, fn func(store.Object) error) error {
	if !strings.Contains(prefix, "/chunks/") {
		return s.Store.List(ctx, prefix, fn)
	}
	s.listing.Add(1)
	defer s.listing.Add(-1)
	return s.Store.List(ctx, prefix, func(o store.Object) error {
		select {
		case <-time.After(s.perObject):
		case <-ctx.Done():
			return ctx.Err()
		}
		return fn(o)
	})
}

// Every step whose work grows with the repository heartbeats from its
// start, and counts what it lists as progress: a chunk listing that takes
// longer than the stall timeout, but moves, neither goes unheartbeated
// (Temporal's heartbeat timeout would end the attempt, and every retry the
// same way) nor trips the stall guard. Each step runs here while its
// listings take two seconds, with a stall timeout of one.
func TestLongStepsHeartbeatThroughASlowListing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := newRaceEnv(t)
	a := env.a
	var listing, reading atomic.Int64
	var mu sync.Mutex
	beats := map[string]int{}     // by step, the heartbeats recorded while a chunk listing ran
	readBeats := map[string]int{} // by step, the heartbeats recorded while a chunk was read
	var scanned atomic.Int64      // the most a heartbeat reported
	a.HeartbeatInterval, a.StallTimeout = 20*time.Millisecond, time.Second
	a.recordHeartbeat = func(_ context.Context, details any) {
		hb := details.(heartbeat)
		mu.Lock()
		if listing.Load() > 0 {
			beats[hb.Progress.Step]++
		}
		if reading.Load() > 0 {
			readBeats[hb.Progress.Step]++
		}
		mu.Unlock()
		if hb.Progress.Scanned > scanned.Load() {
			scanned.Store(hb.Progress.Scanned)
		}
	}
	var epoch uint64
	for _, site := range []string{"primary", "secondary"} {
		prep, err := a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: site})
		if err != nil {
			t.Fatal(err)
		}
		if site == "primary" {
			epoch = prep.Epoch
		}
		// Twenty objects in the chunk listing of each site besides the
		// real chunks (not chunks: the readers skip them), so that every
		// listing takes at least two seconds, twice the stall timeout.
		for i := range 20 {
			key := fmt.Sprintf("%s/chunks/zz/not-a-chunk-%d", racePlan, i)
			if err := env.stores[site].Store.Put(ctx, key, bytes.NewReader(nil), 0); err != nil {
				t.Fatal(err)
			}
		}
		a.stores[site] = &slowListStore{Store: env.stores[site], perObject: 100 * time.Millisecond, perGet: 150 * time.Millisecond, listing: &listing, reading: &reading}
	}
	// A step that lists chunks must heartbeat while it lists; one that
	// does not (a transmit's preparation reads the point only) must
	// heartbeat while it reads the point's entries.
	step := func(name string, lists bool, run func() error) {
		t.Helper()
		mu.Lock()
		clear(beats)
		clear(readBeats)
		mu.Unlock()
		began := time.Now()
		if err := run(); err != nil {
			t.Fatalf("%s with a slow listing: %v", name, err)
		}
		mu.Lock()
		n, r := beats[name], readBeats[name]
		mu.Unlock()
		switch {
		case lists && n == 0:
			t.Fatalf("%s recorded no heartbeat while it listed chunks", name)
		case !lists && r == 0:
			t.Fatalf("%s recorded no heartbeat while it read the point's entries", name)
		}
		t.Logf("%s: %s, %d heartbeats during its listings", name, time.Since(began).Round(time.Millisecond), n)
	}

	op := "backup-slow"
	snap, err := a.snapshot(ctx, SnapshotInput{Plan: racePlan, Site: "primary", Op: op})
	if err != nil {
		t.Fatal(err)
	}
	step("upload", true, func() error {
		_, err := a.Upload(ctx, UploadInput{Plan: racePlan, Site: "primary", Op: op, Pieces: snap.Pieces, Bytes: snap.Bytes})
		return err
	})
	point := repo.NewPointID(snap.Snapshot, "slow")
	step("commit", true, func() error {
		_, err := a.Commit(ctx, CommitInput{Plan: racePlan, Site: "primary", Op: op, Point: point, Snapshot: snap.Snapshot, Pieces: snap.Pieces, Epoch: epoch})
		return err
	})
	if scanned.Load() < 10 {
		t.Fatalf("the heartbeats reported %d objects scanned; the listings returned at least 10", scanned.Load())
	}
	top := "transmit-slow"
	var sum PointSummary
	step("prepare", false, func() error {
		sum, err = a.PrepareTransmit(ctx, PrepareTransmitInput{Plan: racePlan, From: "primary", Op: top, Point: point})
		return err
	})
	if _, err := a.CheckDestination(ctx, CheckDestinationInput{Plan: racePlan, To: "secondary", Point: point, Epoch: sum.Epoch}); err != nil {
		t.Fatal(err)
	}
	step("copy", true, func() error {
		_, err := a.CopyChunks(ctx, CopyChunksInput{Plan: racePlan, From: "primary", To: "secondary", Op: top})
		return err
	})
	step("commit", true, func() error {
		_, err := a.CommitTransmit(ctx, CommitTransmitInput{Plan: racePlan, From: "primary", To: "secondary", Op: top, Point: point, Epoch: sum.Epoch})
		return err
	})
	var prep PrepareRestoreResult
	step("prepare", true, func() error {
		prep, err = a.PrepareRestore(ctx, PrepareRestoreInput{Plan: racePlan, Site: "secondary", Point: point})
		return err
	})
	// The restore's own steps (a syncfs waits for the whole file system)
	// may pause longer than this test's stall timeout: it is here to show
	// the bytes arrived.
	a.StallTimeout = time.Minute
	if _, err := a.RestoreData(ctx, RestoreDataInput{Plan: racePlan, Site: "secondary", Op: "restore-slow", Point: point, SiteEpoch: prep.SiteEpoch}); err != nil {
		t.Fatal(err)
	}
	plan, err := a.plan(racePlan)
	if err != nil {
		t.Fatal(err)
	}
	src, err := plan.SourceAt("primary")
	if err != nil {
		t.Fatal(err)
	}
	restored, err := plan.SourceAt("secondary")
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, src.Path, restored.Path)
}
