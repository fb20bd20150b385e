package datapath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// LocalFiles opens the files the target holds now, before the restore
// replaces them (the dir driver's Open: regular files only, no symlink
// followed).
type LocalFiles interface {
	Open(ctx context.Context, path string) (source.File, error)
	// Empty reports whether the target holds nothing now (it is absent,
	// or an empty directory): Run then asks Open for no file.
	Empty(ctx context.Context) (bool, error)
}

// RestoreStats counts what a restore did. Its JSON names are those of the
// same counts in activities.RestoreDataResult: a checkpoint's resume details
// decode into either.
type RestoreStats struct {
	Files        int64 `json:"files"`
	BytesWritten int64 `json:"bytesWritten"` // data written (holes and zero chunks are not)
	Chunks       int64 `json:"chunksVerified"`
	// ChunksLocal were taken from the file the target already held at the
	// same path and offset, their SHA-256 matching the chunk id, instead of
	// being fetched from the store.
	ChunksLocal int64 `json:"chunksLocal"`
	BytesLocal  int64 `json:"bytesLocal"`
	// FilesRechecked are files an earlier attempt reported finished, which
	// a resumed one read back; FilesRewritten failed that check and were
	// written again.
	FilesRechecked int64 `json:"filesRechecked,omitempty"`
	FilesRewritten int64 `json:"filesRewritten,omitempty"`
}

// RestoreCheckpoint is what a restore reports through Reporter.Resume at
// each checkpoint: Next is the first entry of the manifest not yet durably
// written, Result the counts so far.
type RestoreCheckpoint struct {
	Next   int          `json:"next"`
	Result RestoreStats `json:"result"`
}

// RestoreWorkers is how many chunks a restore fetches, verifies and writes
// at once.
const RestoreWorkers = 16

// Restorer writes the entries of a manifest into a staged restore, verifying
// every chunk against its id (or every file of slices against its SHA-256)
// before it is written. Set the exported fields, then call Run once.
type Restorer struct {
	Repo     *repo.Repo
	Target   source.Restore
	Reporter Reporter
	Log      zerolog.Logger
	// Local, when set, is asked for the file the target holds now at each
	// path: a chunk whose bytes it already holds at the same offset is
	// taken from there instead of being fetched.
	Local LocalFiles
	// Interval is the time between checkpoints (at least 100ms).
	Interval time.Duration
	// ClearSetuid leaves the setuid and setgid bits out of the files'
	// modes (a repository without a key: its content is not
	// authenticated).
	ClearSetuid bool

	memory *semaphore.Weighted // bytes of small files held in memory (inMemoryBudget)

	mu       sync.Mutex
	res      RestoreStats
	mark     watermark
	reported int   // the Next last reported as a resume point
	setuid   int64 // files of the point with the setuid or setgid bit
}

// Result returns the counts so far: final once Run returned nil.
func (w *Restorer) Result() RestoreStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res
}

// SetuidFiles returns how many regular files of the point have the setuid
// or setgid bit (left out when ClearSetuid is set): final once Run returned
// nil.
func (w *Restorer) SetuidFiles() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.setuid
}

// watermark tracks the first entry of the point not yet finished, with
// memory bounded by the files in flight rather than by the point: entries
// before walked were all handed out (directories and symlinks replayed,
// files skipped or opened), and open holds the files opened and not yet
// finished, which finish in any order.
type watermark struct {
	walked int
	open   map[int]struct{}
}

// low is the first entry not yet finished.
func (wm *watermark) low() int {
	low := wm.walked
	for i := range wm.open {
		low = min(low, i)
	}
	return low
}

// checkpoint makes what was written durable and reports the first file not
// yet finished as the resume point: every file before it was closed before
// Sync made its data and directory entry durable.
func (w *Restorer) checkpoint() error {
	w.mu.Lock()
	next, res := w.mark.low(), w.res
	w.mu.Unlock()
	if next <= w.reported {
		return nil
	}
	if err := w.Target.Sync(); err != nil {
		return fmt.Errorf("sync the staged restore: %w", err)
	}
	w.reported = next
	w.Reporter.Resume(RestoreCheckpoint{Next: next, Result: res})
	return nil
}

// checkpoints runs checkpoint every interval until stop is called; a failed
// one cancels ctx.
func (w *Restorer) checkpoints(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(max(w.Interval, 100*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := w.checkpoint(); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	return func() { close(quit); <-stopped }
}

// openFile is a file being written by the chunk workers; the last chunk to
// finish closes it.
type openFile struct {
	index int
	// e is the file's entry without its chunks: its path, size and SHA-256
	// for the checks and messages once its chunks are written.
	e       repo.Entry
	fw      source.FileWriter
	old     source.File // what the target holds at this path now, or nil
	pending int
	err     error
	// whole holds a small file of slices, whose fw is created once all its
	// bytes are in and match its SHA-256 (smallfiles_restore.go).
	whole []byte
	se    source.Entry
}

type restoreJob struct {
	f   *openFile
	ref repo.Ref
	off int64
	// slices (format v2): the job fetches chunk ref.ID once and writes
	// these slices of it into their files; f and off are unused.
	slices []sliceTarget
}

// Run writes the point p into the target, reading its entries as a stream
// (memory does not grow with their number). A fresh restore (next 0) walks
// them once. A resumed one first walks the entries before next, which an
// earlier attempt reported finished (their counts are in done): it replays
// their directories and symlinks (cheap, and the target needs them to apply
// modes at commit) and reads their files back (recheck); then it walks on
// from next, or from the first file that failed its check. It reports a
// RestoreCheckpoint at each checkpoint and once more when everything is
// written and synced. A chunk that is missing or does not verify is a
// drivers.Permanent error naming it.
func (w *Restorer) Run(ctx context.Context, p *repo.Point, next int, done RestoreStats) error {
	next = max(0, min(next, int(p.Meta.Totals.Entries)))
	w.res = done
	w.setuid = 0
	var rewrite []int
	if next > 0 {
		var err error
		if rewrite, err = w.recheck(ctx, p, next); err != nil {
			return err
		}
	}
	start := next
	if len(rewrite) > 0 {
		start = rewrite[0]
	}
	if w.Local != nil {
		// A fresh target (the usual failover) has nothing to offer: a
		// lookup per file would cost a restore of many small files a
		// few system calls each for nothing.
		if empty, err := w.Local.Empty(ctx); err == nil && empty {
			w.Local = nil
		}
	}
	w.mu.Lock()
	w.mark = watermark{walked: start, open: map[int]struct{}{}}
	w.reported = next
	w.mu.Unlock()

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := w.checkpoints(cctx, cancel)
	err := w.write(cctx, p, walkPlan{start: start, next: next, rewrite: rewrite})
	stop()
	if err != nil {
		if cause := context.Cause(cctx); cause != nil && !errors.Is(cause, ctx.Err()) && ctx.Err() == nil {
			return cause // a checkpoint failed
		}
		return err
	}
	return w.checkpoint()
}

// walkPlan is where write's walk starts and what it skips: before next,
// entries were handed out by recheck already, except the files of rewrite
// (ascending), which failed their check.
type walkPlan struct {
	start, next int
	rewrite     []int
}

// write runs the pipeline: one goroutine walks the point and queues the
// chunks of each file to write, workers fetch, verify and write them, and the
// last chunk of a file closes it.
func (w *Restorer) write(ctx context.Context, p *repo.Point, plan walkPlan) error {
	w.memory = semaphore.NewWeighted(inMemoryBudget)
	g, gctx := errgroup.WithContext(ctx)
	wr := &restoreWrite{w: w, jobs: make(chan restoreJob, RestoreWorkers), open: map[int]*openFile{}}
	for range RestoreWorkers {
		g.Go(func() error {
			for j := range wr.jobs {
				if len(j.slices) > 0 {
					if err := w.putSlices(gctx, j, wr.done); err != nil {
						return err
					}
					continue
				}
				if err := w.put(gctx, j); err != nil {
					return err
				}
				if err := wr.done(j.f); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(wr.jobs)
		return wr.walk(gctx, p, plan)
	})
	err := g.Wait()
	for _, f := range wr.open {
		if f.old != nil {
			f.old.Close()
		}
	}
	return err
}

// restoreWrite is one run of write: the walker's queue and the files open.
type restoreWrite struct {
	w    *Restorer
	jobs chan restoreJob
	// pend gathers consecutive slices of one chunk, across files, so that
	// the chunk is fetched once; pendBytes is their size.
	pend      *restoreJob
	pendBytes int64

	mu   sync.Mutex
	open map[int]*openFile // files not yet closed, by entry index
}

// done marks one chunk of f written; the last closes and checks f.
func (wr *restoreWrite) done(f *openFile) error {
	w := wr.w
	wr.mu.Lock()
	f.pending--
	last := f.pending == 0
	wr.mu.Unlock()
	if !last {
		return nil
	}
	if f.old != nil {
		f.old.Close()
	}
	if f.fw == nil {
		if err := w.finishWhole(&f.e, f); err != nil {
			return err
		}
	} else {
		if err := f.fw.Close(); err != nil {
			return fmt.Errorf("finish %q: %w", f.e.Path, err)
		}
		if err := w.verifyStaged(&f.e, f); err != nil {
			return err
		}
	}
	wr.mu.Lock()
	delete(wr.open, f.index)
	wr.mu.Unlock()
	w.mu.Lock()
	w.res.Files++
	delete(w.mark.open, f.index)
	files := w.res.Files
	w.mu.Unlock()
	w.Reporter.Update(func(p *Progress) { p.FilesDone = files })
	return nil
}

func (wr *restoreWrite) send(ctx context.Context, j restoreJob) error {
	select {
	case wr.jobs <- j:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// walk replays directories and symlinks and queues the chunks of every file,
// from plan.start on, skipping what recheck handed out already.
func (wr *restoreWrite) walk(ctx context.Context, p *repo.Point, plan walkPlan) error {
	w := wr.w
	rewrite := plan.rewrite
	err := p.Entries(ctx, int64(plan.start), func(n int64, e *repo.Entry) error {
		i := int(n)
		if i < plan.next {
			// Handed out by recheck, but for the files that failed it.
			if len(rewrite) == 0 || rewrite[0] != i {
				wr.walked(i + 1)
				return nil
			}
			rewrite = rewrite[1:]
		} else if err := w.replay(e); err != nil {
			return err
		}
		if e.Type != source.TypeFile {
			wr.walked(i + 1)
			return nil
		}
		se := entryOf(e)
		if w.ClearSetuid {
			se.Mode &^= fs.ModeSetuid | fs.ModeSetgid
		}
		if err := wr.file(ctx, i, e, se); err != nil {
			return err
		}
		wr.walked(i + 1)
		return nil
	})
	if err != nil {
		return err
	}
	return wr.flush(ctx)
}

// walked records that the entries before i were handed out.
func (wr *restoreWrite) walked(i int) {
	wr.w.mu.Lock()
	wr.w.mark.walked = i
	wr.w.mu.Unlock()
}

// replay stages a directory or a symlink, and counts a file with the setuid
// or setgid bit; every entry passes here once per Run.
func (w *Restorer) replay(e *repo.Entry) error {
	switch e.Type {
	case source.TypeDir:
		return w.Target.Dir(entryOf(e))
	case source.TypeSymlink:
		return w.Target.Symlink(entryOf(e))
	case source.TypeFile:
		if repo.FileMode(e.Mode)&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			w.mu.Lock()
			w.setuid++
			w.mu.Unlock()
		}
	}
	return nil
}

func entryOf(e *repo.Entry) source.Entry {
	return source.Entry{Path: e.Path, Type: e.Type, Mode: repo.FileMode(e.Mode), UID: e.UID, GID: e.GID, Size: e.Size, ModTime: e.ModTime, Target: e.Target}
}

// flush sends the job of slices being gathered, if any.
func (wr *restoreWrite) flush(ctx context.Context) error {
	if wr.pend == nil {
		return nil
	}
	p := *wr.pend
	wr.pend, wr.pendBytes = nil, 0
	return wr.send(ctx, p)
}

// reserve takes n bytes of the in-memory budget for a small file. When
// there is no room it first sends the job being gathered (whose files hold
// part of the budget, and free it only once written), then waits.
func (wr *restoreWrite) reserve(ctx context.Context, n int64) error {
	if wr.w.memory.TryAcquire(n) {
		return nil
	}
	if err := wr.flush(ctx); err != nil {
		return err
	}
	return wr.w.memory.Acquire(ctx, n)
}

// file opens entry i and queues its chunks.
func (wr *restoreWrite) file(ctx context.Context, i int, e *repo.Entry, se source.Entry) error {
	w := wr.w
	f := &openFile{index: i, e: *e, pending: 1} // the extra 1 is released below
	f.e.Chunks = nil
	if inMemory(e) {
		// A small file of slices is created when all its bytes are in
		// and checked: no descriptor is held meanwhile.
		if err := wr.reserve(ctx, e.Size); err != nil {
			return err
		}
		f.whole, f.se = make([]byte, e.Size), se
	} else {
		fw, err := w.Target.File(se)
		if err != nil {
			return err
		}
		f.fw = fw
	}
	if w.Local != nil && e.Size > 0 {
		if old, err := w.Local.Open(ctx, e.Path); err == nil {
			f.old = old
		}
	}
	wr.mu.Lock()
	wr.open[i] = f
	wr.mu.Unlock()
	w.mu.Lock()
	w.mark.open[i] = struct{}{}
	w.mu.Unlock()
	if f.whole != nil && w.wholeFile(f, e) {
		return wr.done(f)
	}
	var off int64
	for _, ref := range e.Chunks {
		if ref.Slice {
			if p := wr.pend; p != nil && (p.ref.ID != ref.ID || len(p.slices) >= maxSliceTargets || wr.pendBytes >= repo.ChunkMax) {
				if err := wr.flush(ctx); err != nil {
					return err
				}
			}
			if wr.pend == nil {
				wr.pend = &restoreJob{ref: repo.Ref{ID: ref.ID}}
			}
			wr.mu.Lock()
			f.pending++
			wr.mu.Unlock()
			wr.pend.slices = append(wr.pend.slices, sliceTarget{f: f, ref: ref, off: off})
			wr.pendBytes += ref.Size
		} else if !ref.Hole {
			wr.mu.Lock()
			f.pending++
			wr.mu.Unlock()
			if err := wr.send(ctx, restoreJob{f: f, ref: ref, off: off}); err != nil {
				return err
			}
		}
		off += ref.Size
	}
	return wr.done(f)
}

// recheck walks the entries before next, which an earlier attempt reported
// finished: it replays their directories and symlinks, and reads back their
// files, returning (ascending) those that do not match the point: the size,
// the modification time (set last, so a file whose writing was cut short
// shows it) and the SHA-256 of each chunk. Holes are not read: nothing
// writes into them. Reading a local file back costs far less than fetching
// it, and it is what makes a file lost or torn by a crash (a power loss, a
// file system that did not keep what it acknowledged) rewritten rather than
// swapped in. Memory holds the files being checked and those that failed.
func (w *Restorer) recheck(ctx context.Context, p *repo.Point, next int) ([]int, error) {
	type item struct {
		i int
		e repo.Entry
	}
	items := make(chan item)
	var mu sync.Mutex
	var rewrite []int
	inPlace := false
	g, gctx := errgroup.WithContext(ctx)
	for range RestoreWorkers {
		g.Go(func() error {
			buf := make([]byte, repo.ChunkMax)
			for it := range items {
				e := &it.e
				why, err := w.check(gctx, e, buf)
				if errors.Is(err, source.ErrInPlace) {
					mu.Lock()
					inPlace = true
					mu.Unlock()
					continue
				}
				if err != nil {
					return err
				}
				w.mu.Lock()
				w.res.FilesRechecked++
				if why != "" {
					w.res.FilesRewritten++
				}
				w.mu.Unlock()
				if why != "" {
					w.Log.Warn().Str("path", e.Path).Str("problem", why).Msg("resumed restore: a file an earlier attempt reported finished failed its check; writing it again")
					mu.Lock()
					rewrite = append(rewrite, it.i)
					mu.Unlock()
					continue
				}
				w.Reporter.Update(func(p *Progress) { p.BytesDone += e.Size; p.FilesDone++ })
			}
			return nil
		})
	}
	errEnough := errors.New("reached the resume point")
	g.Go(func() error {
		defer close(items)
		err := p.Entries(gctx, 0, func(n int64, e *repo.Entry) error {
			if n >= int64(next) {
				return errEnough
			}
			if err := w.replay(e); err != nil {
				return err
			}
			if e.Type != source.TypeFile {
				return nil
			}
			it := item{i: int(n), e: *e}
			it.e.Chunks = slices.Clone(e.Chunks)
			select {
			case items <- it:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		})
		if errors.Is(err, errEnough) {
			return nil
		}
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if inPlace {
		// A Commit was cut short after its commit point: the tree is in
		// place, synced before it was moved, and nothing is written again.
		return nil, nil
	}
	slices.Sort(rewrite)
	return rewrite, nil
}

// check reads back one staged file; it returns what is wrong with it, or ""
// when it matches e.
func (w *Restorer) check(ctx context.Context, e *repo.Entry, buf []byte) (string, error) {
	f, err := w.Target.Staged(e.Path)
	if errors.Is(err, source.ErrInPlace) {
		return "", err
	}
	if err != nil {
		return fmt.Sprintf("cannot be opened: %v", err), nil
	}
	defer f.Close()
	size, mtime, err := f.Stat()
	switch {
	case err != nil:
		return fmt.Sprintf("cannot be read: %v", err), nil
	case size != e.Size:
		return fmt.Sprintf("holds %d bytes, the restore point %d", size, e.Size), nil
	case !mtime.Equal(e.ModTime):
		return "its modification time is not the restore point's: its writing was cut short", nil
	case e.SHA256 != "":
		// Slices cannot be hashed alone: the whole file is.
		return CheckSHA256(ctx, f, e, buf)
	}
	var off int64
	for _, ref := range e.Chunks {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if !ref.Hole {
			if ref.Size > int64(len(buf)) {
				return fmt.Sprintf("names a chunk of %d bytes, more than the format allows", ref.Size), nil
			}
			b := buf[:ref.Size]
			if n, err := f.ReadAt(b, off); int64(n) != ref.Size {
				return fmt.Sprintf("cannot be read at %d: %v", off, err), nil
			}
			if repo.Hash(b) != ref.ID {
				return fmt.Sprintf("its %d bytes at %d do not match chunk %s", ref.Size, off, ref.ID), nil
			}
		}
		off += ref.Size
	}
	return "", nil
}

// put fetches one chunk, verifies it and writes it at its offset. An
// all-zero chunk is not written, so the file keeps a hole there.
func (w *Restorer) put(ctx context.Context, j restoreJob) error {
	if data := w.fromTarget(j); data != nil {
		w.mu.Lock()
		w.res.Chunks++
		w.res.ChunksLocal++
		w.res.BytesLocal += int64(len(data))
		w.mu.Unlock()
		return w.writeChunk(j, data)
	}
	data, err := w.Repo.GetChunk(ctx, j.ref.ID)
	if err != nil {
		if drivers.IsNotFound(err) {
			return drivers.Permanent(drivers.ReasonCorrupt, err)
		}
		return err
	}
	if int64(len(data)) != j.ref.Size {
		return drivers.Permanentf(drivers.ReasonCorrupt, "chunk %s at %s holds %d bytes, the manifest says %d", j.ref.ID, w.Repo.Location(), len(data), j.ref.Size)
	}
	w.mu.Lock()
	w.res.Chunks++
	w.mu.Unlock()
	return w.writeChunk(j, data)
}

// fromTarget returns the chunk's bytes as the target's current file holds
// them at the same offset, when they hash to the chunk's id; nil otherwise.
func (w *Restorer) fromTarget(j restoreJob) []byte {
	if j.f.old == nil {
		return nil
	}
	buf := make([]byte, j.ref.Size)
	n, err := j.f.old.ReadAt(buf, j.off)
	if int64(n) != j.ref.Size || err != nil && err != io.EOF || repo.Hash(buf) != j.ref.ID {
		return nil
	}
	return buf
}

// writeChunk writes a verified chunk at its offset.
func (w *Restorer) writeChunk(j restoreJob, data []byte) error {
	if AllZero(data) {
		w.Reporter.Update(func(p *Progress) { p.BytesDone += int64(len(data)); p.ChunksDone++ })
		return nil
	}
	if _, err := j.f.fw.WriteAt(data, j.off); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	w.mu.Lock()
	w.res.BytesWritten += int64(len(data))
	w.mu.Unlock()
	w.Reporter.Update(func(p *Progress) { p.BytesDone += int64(len(data)); p.ChunksDone++ })
	return nil
}

// AllZero reports whether b holds only zero bytes: a chunk that restores
// as a hole.
func AllZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
