package activities

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drorch/drorch/internal/repo"
)

// The ranges of one backup (parallel-upload) each need what the repository
// holds (its chunk listing) and the parent point. Each range reading them
// anew cost a full listing per range. A worker reads them once per backup
// and shares them among the ranges it runs, for as long as one runs and a
// little after (the next range of the same backup usually starts right
// away). The parent is shared opened, not decoded: its point object (the
// header and the list of its entry parts, a few hundred KiB at 10,000,000
// entries); each range pages the entries in with a Cursor of its own.

// uploadCacheLinger is how long a backup's setup stays cached after its last
// range on this worker ended.
const uploadCacheLinger = time.Minute

// uploadSetup is what every range of one backup reads before it uploads.
type uploadSetup struct {
	known  map[repo.ID]int64
	parent *repo.Point // nil: none, or a full backup; read only, shared

	done   chan struct{} // closed once known, parent and err are set
	listed atomic.Int64  // the objects listed so far, watched by every range waiting for them
	err    error
	users  int
	timer  *time.Timer
}

type uploadCache struct {
	mu sync.Mutex
	m  map[string]*uploadSetup
}

// uploadSetup returns the chunk listing of r and, unless full, the parent
// point, read once per backup op on this worker by the first range that
// needs them while the others wait (each watching the listing's progress,
// and each giving up when its own context ends); release must be called
// when the range is done with them. A failed read is not cached, and a
// range whose wait ended because the reading range was cancelled reads
// them itself.
func (a *Activities) uploadSetup(ctx context.Context, r *repo.Repo, plan, site, op string, full bool, watch func(*atomic.Int64)) (*uploadSetup, func(), error) {
	for {
		s, release, waited, err := a.sharedSetup(ctx, r, plan, site, op, full, watch)
		if err != nil && waited && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			continue // the range that read for this one was cancelled, this one was not
		}
		return s, release, err
	}
}

// sharedSetup is one try of uploadSetup; waited says another range read.
func (a *Activities) sharedSetup(ctx context.Context, r *repo.Repo, plan, site, op string, full bool, watch func(*atomic.Int64)) (_ *uploadSetup, _ func(), waited bool, _ error) {
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%t", plan, site, op, full)
	c := &a.uploads
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*uploadSetup{}
	}
	s := c.m[key]
	reads := s == nil
	if reads {
		s = &uploadSetup{done: make(chan struct{})}
		c.m[key] = s
	}
	s.users++
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if s.users--; s.users > 0 || c.m[key] != s {
			return
		}
		s.timer = time.AfterFunc(uploadCacheLinger, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if s.users == 0 && c.m[key] == s {
				delete(c.m, key)
			}
		})
	}
	// drop forgets s when it failed, so that the next range reads again.
	drop := func() {
		c.mu.Lock()
		if c.m[key] == s {
			delete(c.m, key)
		}
		s.users--
		c.mu.Unlock()
	}
	watch(&s.listed) // the range that lists and those that wait for it see the same progress
	if reads {
		func() {
			defer close(s.done)
			ctx := repo.WithCounter(ctx, &s.listed)
			if s.known, s.err = r.UsableChunks(ctx); s.err != nil { // damaged chunks are uploaded again
				s.err = fmt.Errorf("list chunks at %s: %w", r.Location(), s.err)
				return
			}
			if !full {
				s.parent = a.parent(ctx, r)
			}
			if err := ctx.Err(); err != nil {
				// The parent's read may have been cut short: without it,
				// every range would read every file again.
				s.err = fmt.Errorf("read the chunk listing and parent at %s: %w", r.Location(), err)
			}
		}()
	} else {
		select {
		case <-s.done:
		case <-ctx.Done():
			release()
			return nil, nil, true, fmt.Errorf("wait for the chunk listing of %s: %w", r.Location(), ctx.Err())
		}
	}
	if s.err != nil {
		drop()
		return nil, nil, !reads, s.err
	}
	return s, release, !reads, nil
}
