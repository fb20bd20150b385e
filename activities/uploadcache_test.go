package activities

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// The ranges of one backup on one worker share one chunk listing and one
// opened parent point; another backup reads its own; a setup no range uses any
// more is dropped after the linger.
func TestUploadSetupIsSharedByTheRangesOfOneBackup(t *testing.T) {
	env := newRaceEnv(t)
	r, err := env.a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Store().Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([]*uploadSetup, 4)
	releases := make([]func(), 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, release, err := env.a.uploadSetup(ctx, r, racePlan, "primary", "backup-1", false, func(*atomic.Int64) {})
			if err != nil {
				t.Error(err)
				return
			}
			got[i], releases[i] = s, release
		}()
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] {
			t.Fatalf("range %d of one backup read its own setup", i)
		}
	}
	other, releaseOther, err := env.a.uploadSetup(ctx, r, racePlan, "primary", "backup-2", false, func(*atomic.Int64) {})
	if err != nil {
		t.Fatal(err)
	}
	if other == got[0] {
		t.Fatal("another backup shared the first one's setup")
	}
	releaseOther()
	for _, release := range releases {
		release()
	}
	env.a.uploads.mu.Lock()
	n, timer := len(env.a.uploads.m), got[0].timer
	env.a.uploads.mu.Unlock()
	if n != 2 || timer == nil {
		t.Fatalf("after the last range: %d setups cached, linger timer %v; want both kept a while", n, timer)
	}
}
