package datapath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

	entries []repo.Entry        // the manifest's, for messages
	memory  *semaphore.Weighted // bytes of small files held in memory (inMemoryBudget)

	mu       sync.Mutex
	res      RestoreStats
	mark     watermark
	reported int // the Next last reported as a resume point
}

// Result returns the counts so far: final once Run returned nil.
func (w *Restorer) Result() RestoreStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res
}

// watermark tracks the first file of the manifest not yet finished; files
// finish in any order.
type watermark struct {
	entries []repo.Entry
	done    []bool
	low     int
}

func newWatermark(entries []repo.Entry) watermark {
	wm := watermark{entries: entries, done: make([]bool, len(entries))}
	wm.advance()
	return wm
}

func (wm *watermark) finish(i int) {
	wm.done[i] = true
	wm.advance()
}

func (wm *watermark) advance() {
	for wm.low < len(wm.entries) && (wm.entries[wm.low].Type != source.TypeFile || wm.done[wm.low]) {
		wm.low++
	}
}

// checkpoint makes what was written durable and reports the first file not
// yet finished as the resume point: every file before it was closed before
// Sync made its data and directory entry durable.
func (w *Restorer) checkpoint() error {
	w.mu.Lock()
	next, res := w.mark.low, w.res
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
	index   int
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

// Run writes m into the target. It replays directories and symlinks from the
// start (cheap, and the target needs them to apply modes at commit), checks
// the files before next that an earlier attempt reported finished (whose
// counts were then done), and writes the others. It reports a
// RestoreCheckpoint at each checkpoint and once more when everything is
// written and synced. A chunk that is missing or does not verify is a
// drivers.Permanent error naming it.
func (w *Restorer) Run(ctx context.Context, m *repo.Manifest, next int, done RestoreStats) error {
	next = min(next, len(m.Entries))
	w.res = done
	w.entries = m.Entries
	skip := map[int]bool{}
	if next > 0 {
		var err error
		if skip, err = w.recheck(ctx, m, next); err != nil {
			return err
		}
	}
	w.mu.Lock()
	w.mark = newWatermark(m.Entries)
	for i := range skip {
		w.mark.finish(i)
	}
	w.reported = next
	w.mu.Unlock()

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := w.checkpoints(cctx, cancel)
	err := w.write(cctx, m, skip)
	stop()
	if err != nil {
		if cause := context.Cause(cctx); cause != nil && !errors.Is(cause, ctx.Err()) && ctx.Err() == nil {
			return cause // a checkpoint failed
		}
		return err
	}
	return w.checkpoint()
}

// write runs the pipeline: one goroutine walks the manifest and queues the
// chunks of each file to write, workers fetch, verify and write them, and the
// last chunk of a file closes it.
func (w *Restorer) write(ctx context.Context, m *repo.Manifest, skip map[int]bool) error {
	w.memory = semaphore.NewWeighted(inMemoryBudget)
	g, gctx := errgroup.WithContext(ctx)
	wr := &restoreWrite{w: w, m: m, jobs: make(chan restoreJob, RestoreWorkers), open: map[int]*openFile{}}
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
		return wr.walk(gctx, skip)
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
	m    *repo.Manifest
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
	w, m := wr.w, wr.m
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
		if err := w.finishWhole(&m.Entries[f.index], f); err != nil {
			return err
		}
	} else {
		if err := f.fw.Close(); err != nil {
			return fmt.Errorf("finish %q: %w", m.Entries[f.index].Path, err)
		}
		if err := w.verifyStaged(&m.Entries[f.index], f); err != nil {
			return err
		}
	}
	wr.mu.Lock()
	delete(wr.open, f.index)
	wr.mu.Unlock()
	w.mu.Lock()
	w.res.Files++
	w.mark.finish(f.index)
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

// walk replays directories and symlinks and queues the chunks of every file
// not in skip.
func (wr *restoreWrite) walk(ctx context.Context, skip map[int]bool) error {
	w := wr.w
	for i, e := range wr.m.Entries {
		se := source.Entry{Path: e.Path, Type: e.Type, Mode: repo.FileMode(e.Mode), UID: e.UID, GID: e.GID, Size: e.Size, ModTime: e.ModTime, Target: e.Target}
		switch e.Type {
		case source.TypeDir:
			if err := w.Target.Dir(se); err != nil {
				return err
			}
			continue
		case source.TypeSymlink:
			if err := w.Target.Symlink(se); err != nil {
				return err
			}
			continue
		}
		if skip[i] {
			continue
		}
		if w.ClearSetuid {
			se.Mode &^= fs.ModeSetuid | fs.ModeSetgid
		}
		if err := wr.file(ctx, i, &e, se); err != nil {
			return err
		}
	}
	return wr.flush(ctx)
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
	f := &openFile{index: i, pending: 1} // the extra 1 is released below
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

// recheck reads back the files before next, which an earlier attempt
// reported finished, and returns those that match the manifest: the size,
// the modification time (set last, so a file whose writing was cut short
// shows it) and the SHA-256 of each chunk. Holes are not read: nothing
// writes into them. Reading a local file back costs far less than fetching
// it, and it is what makes a file lost or torn by a crash (a power loss, a
// file system that did not keep what it acknowledged) rewritten rather than
// swapped in.
func (w *Restorer) recheck(ctx context.Context, m *repo.Manifest, next int) (map[int]bool, error) {
	idx := make(chan int)
	var mu sync.Mutex
	ok := map[int]bool{}
	inPlace := false
	g, gctx := errgroup.WithContext(ctx)
	for range RestoreWorkers {
		g.Go(func() error {
			buf := make([]byte, repo.ChunkMax)
			for i := range idx {
				e := &m.Entries[i]
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
					continue
				}
				mu.Lock()
				ok[i] = true
				mu.Unlock()
				w.Reporter.Update(func(p *Progress) { p.BytesDone += e.Size; p.FilesDone++ })
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(idx)
		for i := range next {
			if m.Entries[i].Type != source.TypeFile {
				continue
			}
			select {
			case idx <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if inPlace {
		// A Commit was cut short after its commit point: the tree is in
		// place, synced before it was moved, and nothing is written again.
		for i := range next {
			if m.Entries[i].Type == source.TypeFile {
				ok[i] = true
			}
		}
	}
	return ok, nil
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
