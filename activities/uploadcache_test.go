package activities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// A range waiting for the chunk listing another range reads stops when its
// own context ends, and reads the listing itself when the reading range is
// cancelled: it does not fail with that range's cancellation.
func TestUploadSetupWaitersOutliveTheReader(t *testing.T) {
	env := newRaceEnv(t)
	ctx := context.Background()
	if _, err := env.a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: "primary"}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // a listing of two seconds
		key := fmt.Sprintf("%s/chunks/zz/not-a-chunk-%d", racePlan, i)
		if err := env.stores["primary"].Store.Put(ctx, key, bytes.NewReader(nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	var listing, reading atomic.Int64
	env.a.stores["primary"] = &slowListStore{Store: env.stores["primary"], perObject: 100 * time.Millisecond, listing: &listing, reading: &reading}
	r, err := env.a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	setup := func(ctx context.Context) (*uploadSetup, error) {
		s, release, err := env.a.uploadSetup(ctx, r, racePlan, "primary", "backup-w", true, func(*atomic.Int64) {})
		if err == nil {
			release()
		}
		return s, err
	}
	readerCtx, cancelReader := context.WithCancel(ctx)
	readerErr := make(chan error, 1)
	go func() { _, err := setup(readerCtx); readerErr <- err }()
	for listing.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	impatient, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	if _, err := setup(impatient); !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > time.Second {
		t.Fatalf("a waiting range whose context ended: %v after %s; want its deadline at once", err, time.Since(began))
	}
	waiter := make(chan error, 1)
	var got *uploadSetup
	go func() { s, err := setup(ctx); got = s; waiter <- err }()
	for waiting := false; !waiting; time.Sleep(time.Millisecond) { // the waiter waits for the reader
		env.a.uploads.mu.Lock()
		for _, s := range env.a.uploads.m {
			waiting = s.users == 2
		}
		env.a.uploads.mu.Unlock()
	}
	if listing.Load() == 0 {
		t.Fatal("the reading range ended its listing before the test cancelled it")
	}
	cancelReader()
	if err := <-readerErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled reading range: %v", err)
	}
	if err := <-waiter; err != nil || got == nil || got.known == nil {
		t.Fatalf("the range that waited for a cancelled reader: %v; want the listing read by itself", err)
	}
}
