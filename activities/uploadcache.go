package activities

import (
	"context"
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

	once   sync.Once
	listed atomic.Int64 // the objects listed so far, watched by every range waiting for them
	err    error
	users  int
	timer  *time.Timer
}

type uploadCache struct {
	mu sync.Mutex
	m  map[string]*uploadSetup
}

// uploadSetup returns the chunk listing of r and, unless full, the parent
// point, opened once per backup op on this worker; release must be called
// when the range is done with them. A failed read is not cached.
func (a *Activities) uploadSetup(ctx context.Context, r *repo.Repo, plan, site, op string, full bool, watch func(*atomic.Int64)) (*uploadSetup, func(), error) {
	key := fmt.Sprintf("%s\x00%s\x00%s\x00%t", plan, site, op, full)
	c := &a.uploads
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*uploadSetup{}
	}
	s := c.m[key]
	if s == nil {
		s = &uploadSetup{}
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
	watch(&s.listed) // the range that lists and those that wait for it see the same progress
	s.once.Do(func() {
		ctx := repo.WithCounter(ctx, &s.listed)
		if s.known, s.err = r.UsableChunks(ctx); s.err != nil { // damaged chunks are uploaded again
			s.err = fmt.Errorf("list chunks at %s: %w", r.Location(), s.err)
			return
		}
		if !full {
			s.parent = a.parent(ctx, r)
		}
	})
	if s.err != nil {
		err := s.err
		c.mu.Lock()
		if c.m[key] == s {
			delete(c.m, key) // the next range reads again
		}
		s.users--
		c.mu.Unlock()
		return nil, nil, err
	}
	return s, release, nil
}
