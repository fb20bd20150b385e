package activities

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/internal/testenv"
)

// seq orders the events the race tests observe, across goroutines.
var seq atomic.Int64

// raceStore is a site's real store with two additions for the race tests:
// listing chunks takes a random while more (a large repository's listing
// takes seconds to minutes, the window a failover can land in), and the
// start of every manifest write is numbered on seq.
type raceStore struct {
	store.Store
	mu            sync.Mutex
	listDelay     time.Duration
	manifestStart map[string]int64 // by point
}

func (s *raceStore) List(ctx context.Context, prefix string, fn func(store.Object) error) error {
	if strings.Contains(prefix, "/chunks/") {
		s.mu.Lock()
		d := s.listDelay
		s.mu.Unlock()
		time.Sleep(d)
	}
	return s.Store.List(ctx, prefix, fn)
}

func (s *raceStore) PutIf(ctx context.Context, key string, r io.Reader, size int64, cond store.Condition) (string, error) {
	s.note(key)
	return s.Store.PutIf(ctx, key, r, size, cond)
}

func (s *raceStore) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	s.note(key)
	return s.Store.Put(ctx, key, r, size)
}

func (s *raceStore) note(key string) {
	if rest, ok := strings.CutPrefix(key, racePlan+"/points/"); ok {
		s.mu.Lock()
		s.manifestStart[strings.TrimSuffix(rest, ".json.zst")] = seq.Add(1)
		s.mu.Unlock()
	}
}

const racePlan = "race"

// raceEnv is one MinIO with a bucket per site, and the activities of a
// plan with a key whose source is a few hundred small files.
type raceEnv struct {
	a      *Activities
	stores map[string]*raceStore
	// commitTime is how long a commit took when nothing raced it, measured
	// before the runs: the raise's random delay spans it.
	commitTime time.Duration
}

// calibrate measures a commit that nothing races, with the list delay of
// the runs at its longest, by running commit once.
func (env *raceEnv) calibrate(t *testing.T, site string, commit func() error) {
	t.Helper()
	env.setListDelay(site, 60*time.Millisecond)
	began := time.Now()
	if err := commit(); err != nil {
		t.Fatalf("calibration commit: %v", err)
	}
	env.commitTime = time.Since(began)
	t.Logf("a commit takes %s", env.commitTime)
}

func (env *raceEnv) setListDelay(site string, d time.Duration) {
	rs := env.stores[site]
	rs.mu.Lock()
	rs.listDelay = d
	rs.mu.Unlock()
}

func newRaceEnv(t *testing.T) *raceEnv {
	m := testenv.StartMinIO(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for i := range 300 {
		p := filepath.Join(src, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%03d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprintf("file %d\n", i), 50+i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("RACE_ACCESS", m.AccessKey)
	t.Setenv("RACE_SECRET", m.SecretKey)
	t.Setenv("RACE_KEY", strings.Repeat("5a", 32))
	var cfg strings.Builder
	cfg.WriteString("sites:\n")
	for _, site := range []string{"primary", "secondary"} {
		fmt.Fprintf(&cfg, "  %s:\n    store: {driver: s3, endpoint: %s, bucket: %s, accessKey: env:RACE_ACCESS, secretKey: env:RACE_SECRET, insecure: true}\n", site, m.Endpoint, site)
	}
	fmt.Fprintf(&cfg, "plans:\n  %s:\n    primary: primary\n    secondary: secondary\n    source:\n", racePlan)
	fmt.Fprintf(&cfg, "      primary: {driver: dir, path: %s}\n      secondary: {driver: dir, path: %s}\n", src, filepath.Join(dir, "restored"))
	cfg.WriteString("    encryption: {key: env:RACE_KEY}\n")
	c, err := config.Parse("race.yaml", []byte(cfg.String()))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, cfg.String())
	}
	env := &raceEnv{a: New(c, nil, zerolog.Nop()), stores: map[string]*raceStore{}}
	for _, site := range []string{"primary", "secondary"} {
		st, err := env.a.store(site)
		if err != nil {
			t.Fatal(err)
		}
		rs := &raceStore{Store: st, manifestStart: map[string]int64{}}
		env.a.stores[site] = rs
		env.stores[site] = rs
	}
	return env
}

// backupUntilCommit runs a backup's prepare, snapshot and upload at the
// primary and returns the input of its commit.
func (env *raceEnv) backupUntilCommit(ctx context.Context, t *testing.T, run int) CommitInput {
	t.Helper()
	a := env.a
	prep, err := a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	op := fmt.Sprintf("backup-race-%d", run)
	snap, err := a.snapshot(ctx, SnapshotInput{Plan: racePlan, Site: "primary", Op: op})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.upload(ctx, UploadInput{Plan: racePlan, Site: "primary", Op: op, Pieces: snap.Pieces, Bytes: snap.Bytes}); err != nil {
		t.Fatal(err)
	}
	return CommitInput{Plan: racePlan, Site: "primary", Op: op, Point: repo.NewPointID(snap.Snapshot, fmt.Sprintf("r%d", run)),
		Snapshot: snap.Snapshot, Pieces: snap.Pieces, Epoch: prep.Epoch}
}

// raceOutcome is what one run of a commit racing an epoch raise left.
type raceOutcome struct {
	committed bool // else superseded
}

// race runs commit and, after a random delay, raise (from the site's epoch
// to the next) at site, and checks the rule: either the commit succeeded
// and its point is valid, or it failed "superseded by epoch N" and the point
// is valid nowhere. Never is a point of the old epoch valid whose manifest
// was written after the new epoch was set.
func (env *raceEnv) race(ctx context.Context, t *testing.T, run int, site, point string, oldEpoch uint64, commit func() error) raceOutcome {
	t.Helper()
	rs := env.stores[site]
	listDelay := time.Duration(10+rand.IntN(50)) * time.Millisecond
	env.setListDelay(site, listDelay)
	// The raise lands anywhere from just before the commit begins to well
	// after it ends.
	delay := time.Duration(rand.Int64N(int64(2*env.commitTime))) - 10*time.Millisecond

	var commitErr, raiseErr error
	var raisedAt int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Go(func() {
		<-start
		if delay < 0 {
			time.Sleep(-delay)
		}
		commitErr = commit()
	})
	wg.Go(func() {
		<-start
		if delay > 0 {
			time.Sleep(delay)
		}
		_, raiseErr = env.a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: site, Active: "secondary", Op: fmt.Sprintf("raise-%s-%d", site, run), Reason: "race test failover"})
		raisedAt = seq.Add(1)
	})
	close(start)
	wg.Wait()
	if raiseErr != nil {
		t.Fatalf("run %d: raise: %v", run, raiseErr)
	}

	r, err := env.a.repo(racePlan, site)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil || ep.Epoch != oldEpoch+1 || len(ep.Pending) != 0 {
		t.Fatalf("run %d: epoch at %s after the race: %+v %v; want %d and nothing pending", run, site, ep, err, oldEpoch+1)
	}
	pts, err := r.Points(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, p := range pts {
		listed = listed || p.ID == point
	}
	has, err := r.HasManifest(ctx, point)
	if err != nil {
		t.Fatal(err)
	}
	m, getErr := r.GetManifest(ctx, point)
	valid := listed && has && getErr == nil
	if (listed || has || getErr == nil) != valid {
		t.Fatalf("run %d: readers disagree on point %s: listed %v, HasManifest %v, GetManifest %v", run, point, listed, has, getErr)
	}
	rs.mu.Lock()
	written, wrote := rs.manifestStart[point]
	rs.mu.Unlock()
	if valid && wrote && written > raisedAt {
		t.Fatalf("run %d (list delay %s, raise after %s): point %s of epoch %d is valid at %s, but its manifest was written after epoch %d was set",
			run, listDelay, delay, point, m.Epoch, site, oldEpoch+1)
	}
	switch {
	case commitErr == nil && valid:
		if m.Epoch != oldEpoch {
			t.Fatalf("run %d: the committed point has epoch %d, want %d", run, m.Epoch, oldEpoch)
		}
		return raceOutcome{committed: true}
	case commitErr == nil:
		t.Fatalf("run %d: the commit succeeded but point %s is not valid at %s (epoch %+v)", run, point, site, ep)
	case valid:
		t.Fatalf("run %d: the commit failed (%v) but point %s is valid at %s", run, commitErr, point, site)
	}
	if reason, _ := drivers.IsPermanent(commitErr); reason != drivers.ReasonFenced || !strings.Contains(commitErr.Error(), fmt.Sprintf("superseded by epoch %d", oldEpoch+1)) {
		t.Fatalf("run %d: the commit failed with %v (reason %q), want a permanent Fenced error saying superseded by epoch %d", run, commitErr, reason, oldEpoch+1)
	}
	if !drivers.IsNotFound(getErr) {
		t.Fatalf("run %d: reading the superseded point: %v, want not found", run, getErr)
	}
	return raceOutcome{}
}

// TestBackupCommitRacesEpochRaise races a backup's commit against a
// failover raising the epoch at the same site, with random timing, many
// times over: the point is valid and was committed before the raise, or it
// is valid nowhere and the backup says "superseded".
func TestBackupCommitRacesEpochRaise(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := newRaceEnv(t)
	in := env.backupUntilCommit(ctx, t, 100)
	env.calibrate(t, "primary", func() error { _, err := env.a.commit(ctx, in); return err })
	const runs = 24
	var committed, superseded int
	for run := range runs {
		in := env.backupUntilCommit(ctx, t, run)
		out := env.race(ctx, t, run, "primary", in.Point, in.Epoch, func() error {
			_, err := env.a.commit(ctx, in)
			return err
		})
		if out.committed {
			committed++
		} else {
			superseded++
		}
	}
	t.Logf("%d runs: %d committed before the raise, %d superseded", runs, committed, superseded)
	if committed == 0 || superseded == 0 {
		t.Fatalf("%d committed, %d superseded: the timing never raced both ways", committed, superseded)
	}
}

// TestTransmitCommitRacesEpochRaise does the same for a transmission's
// commit at the destination, raced by a raise of the destination's epoch;
// and checks that a point abandoned at its source is never transmitted.
func TestTransmitCommitRacesEpochRaise(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := newRaceEnv(t)
	a := env.a
	const runs = 20
	var committed, superseded int
	for run := range runs + 1 {
		// Both sites at the same epoch, and a fresh point at the primary.
		for _, site := range []string{"primary", "secondary"} {
			if _, err := a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: site}); err != nil {
				t.Fatal(err)
			}
		}
		sec, err := a.repo(racePlan, "secondary")
		if err != nil {
			t.Fatal(err)
		}
		se, err := sec.GetEpoch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Active: "primary", Op: fmt.Sprintf("adopt-%d", run), Adopt: se.Epoch, Reason: "catch up"}); err != nil {
			t.Fatal(err)
		}
		in := env.backupUntilCommit(ctx, t, run)
		if _, err := a.commit(ctx, in); err != nil {
			t.Fatalf("run %d: backup: %v", run, err)
		}
		op := fmt.Sprintf("transmit-race-%d", run)
		pt, err := a.prepareTransmit(ctx, PrepareTransmitInput{Plan: racePlan, From: "primary", Op: op, Point: in.Point})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.checkDestination(ctx, CheckDestinationInput{Plan: racePlan, To: "secondary", Point: pt.Point, Epoch: pt.Epoch}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.copyChunks(ctx, CopyChunksInput{Plan: racePlan, From: "primary", To: "secondary", Op: op}); err != nil {
			t.Fatal(err)
		}
		commit := func() error {
			_, err := a.commitTransmit(ctx, CommitTransmitInput{Plan: racePlan, From: "primary", To: "secondary", Op: op, Point: pt.Point, Epoch: pt.Epoch})
			return err
		}
		if run == 0 { // the first round calibrates
			env.calibrate(t, "secondary", commit)
			continue
		}
		out := env.race(ctx, t, run, "secondary", pt.Point, se.Epoch, commit)
		if out.committed {
			committed++
		} else {
			superseded++
		}
	}
	t.Logf("%d runs: %d committed before the raise, %d superseded", runs, committed, superseded)
	if committed == 0 || superseded == 0 {
		t.Fatalf("%d committed, %d superseded: the timing never raced both ways", committed, superseded)
	}

	// A point abandoned at the source is not sent anywhere.
	pri, err := a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	in := env.backupUntilCommit(ctx, t, runs+1)
	env.setListDelay("primary", 0)
	raiseDuring := func(ctx context.Context) error {
		_, err := a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Active: "secondary", Op: "abandon-at-source", Reason: "failover during the backup's commit"})
		return err
	}
	m, err := env.assemble(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if err := pri.CommitPoint(ctx, m, raiseDuring); err == nil || !strings.Contains(err.Error(), "superseded") {
		t.Fatalf("commit with a raise during it: %v, want superseded", err)
	}
	_, err = a.prepareTransmit(ctx, PrepareTransmitInput{Plan: racePlan, From: "primary", Op: "transmit-abandoned", Point: in.Point})
	if !drivers.IsNotFound(err) {
		t.Fatalf("transmitting a point abandoned at its source: %v, want not found", err)
	}
	_, err = a.commitTransmit(ctx, CommitTransmitInput{Plan: racePlan, From: "primary", To: "secondary", Op: "transmit-abandoned", Point: in.Point, Epoch: in.Epoch})
	if !drivers.IsNotFound(err) {
		t.Fatalf("committing the transmission of a point abandoned at its source: %v, want not found", err)
	}
}

// assemble builds the manifest a backup's commit would write, from its
// staged pieces, as commit does.
func (env *raceEnv) assemble(ctx context.Context, in CommitInput) (*repo.Manifest, error) {
	r, err := env.a.repo(in.Plan, in.Site)
	if err != nil {
		return nil, err
	}
	return assembleManifest(ctx, r, in)
}
