package activities

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drorch/drorch/internal/repo"
)

// TestGCRacesBackup runs retention and garbage collection (two runs, at
// random moments) while a backup takes a point, 30 times, against real
// MinIO, with the margin short enough that every run deletes what the one
// before marked. A few files change each time, so each time the points
// forgotten leave garbage. After every run, every chunk a valid point
// names is stored; at the end every kept point restores, verified chunk
// by chunk, and the newest equals the source.
func TestGCRacesBackup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	old := repo.GCMargin
	repo.GCMargin = 1500 * time.Millisecond
	t.Cleanup(func() { repo.GCMargin = old })
	env := newRaceEnv(t)
	a := env.a
	sc, _, err := a.sourceAt(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	r, err := a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	backup := func(run int) (string, time.Duration) {
		began := time.Now()
		in := env.backupUntilCommit(ctx, t, run)
		for {
			_, err := a.commit(ctx, in)
			if err != nil && strings.Contains(err.Error(), "garbage collection has been deleting") {
				time.Sleep(20 * time.Millisecond) // Temporal retries it
				continue
			}
			if err != nil {
				t.Fatalf("run %d: commit: %v", run, err)
			}
			return in.Point, time.Since(began)
		}
	}
	_, took := backup(1000)
	t.Logf("a backup takes %s", took)

	var deleted, marked, notSwept, refused int
	const runs = 30
	for run := range runs {
		// Change a few files: their old chunks become garbage once the
		// points that name them are forgotten. The same ten each time:
		// small files share the chunks of their backup's run (format v2),
		// so a chunk is garbage only once every file in it has changed.
		for k := range 10 {
			i := 10 * k
			p := filepath.Join(sc.Path, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%03d", i))
			if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprintf("file %d run %d\n", i, run), 20+rand.IntN(80))), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		var gcErr error
		var results []repo.GCResult
		wg.Go(func() {
			for range 2 {
				time.Sleep(time.Duration(rand.Int64N(int64(took))))
				if _, err := a.applyRetention(ctx, ApplyRetentionInput{Plan: racePlan, Site: "primary"}); err != nil {
					gcErr = err
					return
				}
				res, err := a.CollectGarbage(ctx, CollectGarbageInput{Plan: racePlan, Site: "primary"})
				if err != nil {
					gcErr = err
					return
				}
				results = append(results, res)
			}
		})
		point, _ := backup(run)
		wg.Wait()
		if gcErr != nil {
			t.Fatalf("run %d: retention or garbage collection: %v", run, gcErr)
		}
		for _, res := range results {
			deleted += res.Deleted
			marked += res.NewlyMarked
			if !res.Swept {
				notSwept++
				if strings.Contains(res.NoSweep, "being committed") {
					refused++
				}
			}
		}
		// Every valid point is whole, the new one first of all.
		pts, err := r.Points(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := r.Chunks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range pts {
			found = found || p.ID == point
			m, err := r.GetManifest(ctx, p.ID)
			if err != nil {
				t.Fatalf("run %d: %v", run, err)
			}
			if err := r.CheckPresent("point "+p.ID, repo.Needs(m), stored); err != nil {
				t.Fatalf("run %d: garbage collection deleted a chunk a valid point names: %v\nresults %+v", run, err, results)
			}
		}
		if !found {
			t.Fatalf("run %d: the newly committed point %s is not valid: %+v", run, point, pts)
		}
	}
	t.Logf("%d runs: %d chunks marked, %d deleted; %d collections did not sweep (%d because a commit was pending)", runs, marked, deleted, notSwept, refused)
	if deleted == 0 {
		t.Fatal("no chunk was ever deleted: the test did not exercise the sweep")
	}

	// Every kept point restores and verifies; the newest is the source.
	pts, err := r.Points(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pts {
		to := filepath.Join(t.TempDir(), "restored")
		res, err := a.restoreData(ctx, RestoreDataInput{Plan: racePlan, Site: "primary", Op: fmt.Sprintf("verify-%d", i), Point: p.ID, To: to, SiteEpoch: ep.Epoch})
		if err != nil {
			t.Fatalf("restore of kept point %s: %v", p.ID, err)
		}
		if i == len(pts)-1 {
			sameFiles(t, sc.Path, to)
		}
		t.Logf("kept point %s restored: %d files, %d chunks verified", p.ID, res.Files, res.Chunks)
	}
}

// sameFiles checks that every regular file under want has the same bytes
// under got, and that got has no others.
func sameFiles(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.Walk(want, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(got, rel))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s differs after the restore: %v", rel, err)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m := 0
	_ = filepath.Walk(got, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			m++
		}
		return nil
	})
	if m != n {
		t.Fatalf("restored %d files, the source has %d", m, n)
	}
}
