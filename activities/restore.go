package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// PrepareRestoreInput names a restore point and where it goes.
type PrepareRestoreInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point,omitempty"` // empty: latest at Site
	To    string `json:"to,omitempty"`    // empty: the plan's source at Site
	// At (postgres): the newest point whose base backup ended by then,
	// when Point is empty; the restore recovers the WAL up to At.
	At time.Time `json:"at,omitzero"`
}

// PrepareRestoreResult describes what will be restored where.
type PrepareRestoreResult struct {
	PointSummary
	Target    string `json:"target"`
	SiteEpoch uint64 `json:"siteEpoch"`
	// Resolved is a --to path with its symlinks resolved on the site's
	// worker: the key of its claim, so that two spellings of one directory
	// are one target.
	Resolved string `json:"resolved,omitempty"`
}

// PrepareRestore reads and verifies the manifest, checks that every chunk it
// names is in the site's repository and that the target is usable.
func (a *Activities) PrepareRestore(ctx context.Context, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	res, err := a.prepareRestore(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) prepareRestore(ctx context.Context, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	if sc, ok := a.execRestore(in.Plan, in.Site, in.To); ok {
		return a.prepareRestoreStream(ctx, sc, in)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	tgt, err := a.restoreTarget(in.Plan, in.Site, in.To)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	var m *repo.Manifest
	if !in.At.IsZero() && in.Point == "" {
		m, err = a.pointAt(ctx, r, in.At) // pgrestore.go
	} else {
		m, err = a.manifest(ctx, r, in.Point)
	}
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	have, err := r.Chunks(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	if err := r.CheckPresent("restore point "+m.Point, repo.Needs(m), have); err != nil {
		return PrepareRestoreResult{}, err
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	res := PrepareRestoreResult{PointSummary: summary(m, in.Site), Target: tgt.Describe(), SiteEpoch: ep.Epoch}
	if in.To != "" {
		res.Resolved = resolvePath(in.To)
	}
	return res, nil
}

// restoreTarget is target, refusing a path given with --to that is, holds
// or lies inside the plan's live source at site, once symlinks are resolved:
// a restore there would replace production data with an older point, which
// leaving out --to says on purpose.
func (a *Activities) restoreTarget(planName, site, to string) (source.Target, error) {
	tgt, err := a.target(planName, site, to)
	if err != nil || to == "" {
		return tgt, err
	}
	p, err := a.plan(planName)
	if err != nil {
		return nil, err
	}
	if sc, err := p.SourceAt(site); err == nil {
		if err := refuseLive("restore --to", to, sc.Path, site); err != nil {
			return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "%v; to restore into the live source on purpose, leave out --to", err)
		}
	}
	return tgt, nil
}

// refuseLive returns an error when path overlaps (is, holds or lies inside)
// the live source path at site, comparing both as written and with their
// symlinks resolved on this host.
func refuseLive(what, path, live, site string) error {
	if live == "" {
		return nil // an exec source: no tree of its own to overlap
	}
	p, l := filepath.Clean(path), filepath.Clean(live)
	rp, rl := resolvePath(p), resolvePath(l)
	var how string
	switch {
	case within(p, l) || within(rp, rl):
		how = "lies inside"
	case within(l, p) || within(rl, rp):
		how = "holds"
	default:
		return nil
	}
	resolved := ""
	if rp != p {
		resolved = " (resolving to " + rp + ")"
	}
	liveResolved := ""
	if rl != l {
		liveResolved = ", resolving to " + rl
	}
	return drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s%s %s the plan's live source at %s (%s%s): refusing to write there",
		what, p, resolved, how, site, l, liveResolved)
}

// resolvePath resolves the symlinks of an absolute path as far as it exists,
// following dangling ones by their text, and keeps the rest as written: where
// a write to path would land.
func resolvePath(path string) string {
	out := "/"
	comps := strings.Split(filepath.Clean(path), "/")
	for hops := 0; len(comps) > 0; {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			out = filepath.Dir(out)
			continue
		}
		next := filepath.Join(out, c)
		fi, err := os.Lstat(next)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 || hops >= 40 {
			out = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			out = next
			continue
		}
		hops++
		if filepath.IsAbs(target) {
			out = "/"
		}
		comps = append(strings.Split(target, "/"), comps...)
	}
	return out
}

// RestoreDataInput names the restore to perform.
type RestoreDataInput struct {
	Plan      string `json:"plan"`
	Site      string `json:"site"`
	Op        string `json:"op"` // restore id: names the staging beside the target
	Point     string `json:"point"`
	To        string `json:"to,omitempty"`
	SiteEpoch uint64 `json:"siteEpoch"`
	// KeepSetuid recreates the setuid and setgid bits of files restored
	// from a repository without a key. Such a repository's content is not
	// authenticated: whoever can write to its bucket could plant a setuid
	// program, so by default the bits are left out.
	KeepSetuid bool `json:"keepSetuid,omitempty"`
	// At (postgres) is the recovery target time; zero: the newest WAL.
	At time.Time `json:"at,omitzero"`
	// Force (postgres) lets the restore stop a server running as a primary
	// in the target. Switch (postgres) marks a failover's or failback's
	// restore: the server may be stopped too, and once promoted it archives
	// its WAL into this site's repository as the plan's active database; any
	// other restore's server archives nothing, so that its new timeline never
	// enters the plan's WAL.
	Force  bool `json:"force,omitempty"`
	Switch bool `json:"switch,omitempty"`
}

// RestoreDataResult counts what was restored.
type RestoreDataResult struct {
	Target       string `json:"target"`
	Entries      int64  `json:"entries"`
	Files        int64  `json:"files"`
	Bytes        int64  `json:"bytes"`        // logical size of the files
	BytesWritten int64  `json:"bytesWritten"` // data written (holes and zero chunks are not)
	Chunks       int64  `json:"chunksVerified"`
	// ChunksLocal were taken from the file the target already held at the
	// same path and offset, their SHA-256 matching the chunk id, instead of
	// being fetched from the store: a restore over an earlier one (a warm
	// standby, a failback round) moves only what changed.
	ChunksLocal int64 `json:"chunksLocal"`
	BytesLocal  int64 `json:"bytesLocal"`
	// FilesRechecked are files an earlier attempt reported finished, which a
	// resumed attempt read back (size, modification time and the SHA-256
	// of every chunk) instead of trusting; FilesRewritten failed that check
	// and were written again.
	FilesRechecked int64 `json:"filesRechecked,omitempty"`
	FilesRewritten int64 `json:"filesRewritten,omitempty"`
	// SetuidCleared counts files restored without the setuid or setgid bits
	// they have in the restore point (see RestoreDataInput.KeepSetuid).
	SetuidCleared int64 `json:"setuidCleared,omitempty"`
	// ServerStarted (postgres): the restored server was started and has
	// recovered; RecoveredTo is the commit time of the last transaction it
	// replayed, the time its data reaches (zero: none was replayed).
	ServerStarted bool      `json:"serverStarted,omitempty"`
	RecoveredTo   time.Time `json:"recoveredTo,omitzero"`
}

type restoreResume struct {
	Next      int               `json:"next"` // first entry not yet durably written
	Committed bool              `json:"committed"`
	Result    RestoreDataResult `json:"result"`
}

const restoreWorkers = 16

// RestoreData writes the restore point into a staging area beside the target,
// verifying every chunk against its id, then moves it into place. A corrupt
// chunk stops the restore with an error naming it: the target never receives
// a byte that did not verify.
//
// A retried attempt continues after the last file reported finished, which
// was synced to disk (data and directory entry) before it was reported; it
// reads back every file it skips and writes again any that does not match.
// The staging is removed whenever no attempt will follow (a permanent error,
// cancellation, fencing, the last attempt's timeout); what a crash leaves is
// swept by the next restore into the same target.
func (a *Activities) RestoreData(ctx context.Context, in RestoreDataInput) (RestoreDataResult, error) {
	started := time.Now()
	pg, err := a.postgresTarget(in)
	var res RestoreDataResult
	switch {
	case err != nil:
	case pg != nil:
		res, err = a.restorePostgres(ctx, in, pg) // pgrestore.go
	default:
		res, err = a.restoreData(ctx, in)
	}
	if err == nil {
		metrics.OperationDone("restore", time.Since(started))
	}
	return res, temporalError(err)
}

func (a *Activities) restoreData(ctx context.Context, in RestoreDataInput) (RestoreDataResult, error) {
	if sc, ok := a.execRestore(in.Plan, in.Site, in.To); ok {
		return a.restoreStream(ctx, sc, in)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return RestoreDataResult{}, err
	}
	tgt, err := a.restoreTarget(in.Plan, in.Site, in.To)
	if err != nil {
		return RestoreDataResult{}, err
	}
	var st restoreResume
	if resumeDetails(ctx, &st) && st.Committed {
		return st.Result, nil
	}
	rs, err := tgt.Begin(ctx, in.Op)
	if err != nil {
		return RestoreDataResult{}, fmt.Errorf("begin restore into %s: %w", tgt.Describe(), err)
	}
	defer rs.Close()
	res, err := a.restoreInto(ctx, r, tgt, rs, in, st)
	if err != nil && a.restoreEnds(ctx, err) {
		// No attempt will resume this staging: remove it now rather than
		// leave a full-size copy beside the target.
		if aerr := rs.Abort(); aerr != nil {
			a.log.Error().Err(aerr).Str("target", tgt.Describe()).Msg("removing the staged restore failed; the next restore into this target sweeps it")
		} else {
			a.log.Info().Str("target", tgt.Describe()).Str("op", in.Op).AnErr("cause", err).Msg("restore stopped; its staging was removed")
		}
	}
	return res, err
}

func (a *Activities) restoreInto(ctx context.Context, r *repo.Repo, tgt source.Target, rs source.Restore, in RestoreDataInput, st restoreResume) (RestoreDataResult, error) {
	m, err := r.GetManifest(ctx, in.Point)
	if err != nil {
		return RestoreDataResult{}, err
	}
	if err := checkEpoch(ctx, r, in.SiteEpoch, "restore "+in.Point); err != nil {
		return RestoreDataResult{}, err
	}
	if !rs.Resumed() {
		// Nothing staged survived (another host, or it was cleaned up):
		// every file must be written again, whatever the heartbeat says.
		st = restoreResume{}
	}
	rep := a.startReporter(ctx, "restore")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	rep.update(func(p *Progress) { p.BytesTotal, p.FilesTotal = m.Totals.Bytes, m.Totals.Files })
	// Until this attempt reports progress of its own, the earlier one's
	// stands: an attempt lost before its first checkpoint must not make the
	// next one start over.
	rep.resume(st)

	w := &restorer{repo: r, rs: rs, rep: rep, log: a.log, res: st.Result, interval: a.HeartbeatInterval}
	if l, ok := tgt.(localFiles); ok {
		w.local = l
	}
	w.res.Target = tgt.Describe()
	if !r.Encrypted() && !in.KeepSetuid {
		w.clearSetuid = true
		if n := setuidFiles(m); n > 0 {
			a.log.Warn().Str("target", tgt.Describe()).Int64("files", n).
				Msg("restoring without setuid/setgid bits: the repository has no key, so its content is not authenticated; restore with --setuid to keep them")
		}
	}
	if err := w.run(ctx, m, st.Next); err != nil {
		return RestoreDataResult{}, err
	}
	if err := a.swap(ctx, in, r, rs); err != nil {
		return RestoreDataResult{}, err
	}
	res := w.result()
	res.Entries, res.Files, res.Bytes = m.Totals.Entries, m.Totals.Files, m.Totals.Bytes
	if w.clearSetuid {
		res.SetuidCleared = setuidFiles(m)
	}
	rep.resume(restoreResume{Next: len(m.Entries), Committed: true, Result: res})
	return res, nil
}

// setuidFiles counts the regular files of m with the setuid or setgid bit.
func setuidFiles(m *repo.Manifest) int64 {
	var n int64
	for _, e := range m.Entries {
		if e.Type == source.TypeFile && repo.FileMode(e.Mode)&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			n++
		}
	}
	return n
}

// restoreEnds reports whether err ends the restore, so that no later attempt
// will resume its staging: a permanent error (corrupt data, fenced, refused),
// cancellation by its workflow (or the workflow gone), the last attempt the
// retry policy allows, or the schedule-to-close timeout. A worker shutting
// down, a transient error or this attempt's own timeout leave the staging to
// the next attempt.
func (a *Activities) restoreEnds(ctx context.Context, err error) bool {
	if _, ok := drivers.IsPermanent(err); ok {
		return true
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.NonRetryable() {
		return true
	}
	if !activity.IsActivity(ctx) {
		return false
	}
	info := activity.GetInfo(ctx)
	if ctx.Err() == context.Canceled {
		cause := context.Cause(ctx)
		if temporal.IsCanceledError(cause) {
			return true
		}
		var nf *serviceerror.NotFound
		if errors.As(cause, &nf) {
			// The server no longer knows this attempt: its workflow ended
			// (cancelled, terminated), or it timed out and another
			// attempt took over. Only the workflow can tell which.
			return a.workflowClosed(info.WorkflowExecution.ID, info.WorkflowExecution.RunID)
		}
		return false
	}
	if rp := info.RetryPolicy; rp != nil && rp.MaximumAttempts > 0 && info.Attempt >= rp.MaximumAttempts {
		return true
	}
	// An attempt's deadline shorter than its start-to-close timeout is the
	// schedule-to-close deadline, after which nothing is retried.
	return ctx.Err() == context.DeadlineExceeded && info.StartToCloseTimeout > 0 &&
		info.Deadline.Before(info.StartedTime.Add(info.StartToCloseTimeout-time.Second))
}

// workflowClosed reports whether the workflow run has ended; false when that
// cannot be learnt.
func (a *Activities) workflowClosed(id, runID string) bool {
	if a.client == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	desc, err := a.client.DescribeWorkflowExecution(ctx, id, runID)
	if err != nil {
		a.log.Warn().Err(err).Str("workflow", id).Msg("cannot tell whether the restore's workflow ended; its staging is kept")
		return false
	}
	return desc.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING
}

// localFiles opens the files the target holds now, before the restore
// replaces them (the dir driver's Open: regular files only, no symlink
// followed).
type localFiles interface {
	Open(ctx context.Context, path string) (source.File, error)
}

// restorer writes the entries of a manifest into a staged restore.
type restorer struct {
	repo        *repo.Repo
	rs          source.Restore
	rep         *reporter
	log         zerolog.Logger
	local       localFiles    // nil: fetch every chunk
	interval    time.Duration // between checkpoints
	clearSetuid bool

	entries []repo.Entry // the manifest's, for messages

	mu       sync.Mutex
	res      RestoreDataResult
	mark     watermark
	reported int // the Next last reported as a resume point
}

func (w *restorer) result() RestoreDataResult {
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
func (w *restorer) checkpoint() error {
	w.mu.Lock()
	next, res := w.mark.low, w.res
	w.mu.Unlock()
	if next <= w.reported {
		return nil
	}
	if err := w.rs.Sync(); err != nil {
		return fmt.Errorf("sync the staged restore: %w", err)
	}
	w.reported = next
	w.rep.resume(restoreResume{Next: next, Result: res})
	return nil
}

// checkpoints runs checkpoint every interval until stop is called; a failed
// one cancels ctx.
func (w *restorer) checkpoints(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	quit, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(max(w.interval, 100*time.Millisecond))
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

// run replays directories and symlinks from the start (cheap, and the
// target needs them to apply modes at commit), checks the files before next
// that an earlier attempt reported finished, and writes the others. It
// reports progress at checkpoints and once more when everything is written.
func (w *restorer) run(ctx context.Context, m *repo.Manifest, next int) error {
	next = min(next, len(m.Entries))
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
func (w *restorer) write(ctx context.Context, m *repo.Manifest, skip map[int]bool) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan restoreJob, restoreWorkers)
	var mu sync.Mutex
	open := map[int]*openFile{} // files not yet closed, by entry index
	done := func(f *openFile) error {
		mu.Lock()
		f.pending--
		last := f.pending == 0
		mu.Unlock()
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
		mu.Lock()
		delete(open, f.index)
		mu.Unlock()
		w.mu.Lock()
		w.res.Files++
		w.mark.finish(f.index)
		files := w.res.Files
		w.mu.Unlock()
		w.rep.update(func(p *Progress) { p.FilesDone = files })
		return nil
	}
	for range restoreWorkers {
		g.Go(func() error {
			for j := range jobs {
				if len(j.slices) > 0 {
					if err := w.putSlices(gctx, j, done); err != nil {
						return err
					}
					continue
				}
				if err := w.put(gctx, j); err != nil {
					return err
				}
				if err := done(j.f); err != nil {
					return err
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		// pend gathers consecutive slices of one chunk, across files, so
		// that the chunk is fetched once.
		var pend *restoreJob
		send := func(j restoreJob) error {
			select {
			case jobs <- j:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		for i, e := range m.Entries {
			se := source.Entry{Path: e.Path, Type: e.Type, Mode: repo.FileMode(e.Mode), UID: e.UID, GID: e.GID, Size: e.Size, ModTime: e.ModTime, Target: e.Target}
			switch e.Type {
			case source.TypeDir:
				if err := w.rs.Dir(se); err != nil {
					return err
				}
				continue
			case source.TypeSymlink:
				if err := w.rs.Symlink(se); err != nil {
					return err
				}
				continue
			}
			if skip[i] {
				continue
			}
			if w.clearSetuid {
				se.Mode &^= fs.ModeSetuid | fs.ModeSetgid
			}
			f := &openFile{index: i, pending: 1} // the extra 1 is released below
			if inMemory(&e) {
				// A small file of slices is created when all its bytes
				// are in and checked: no descriptor is held meanwhile.
				f.whole, f.se = make([]byte, e.Size), se
			} else {
				fw, err := w.rs.File(se)
				if err != nil {
					return err
				}
				f.fw = fw
			}
			if w.local != nil && e.Size > 0 {
				if old, err := w.local.Open(gctx, e.Path); err == nil {
					f.old = old
				}
			}
			mu.Lock()
			open[i] = f
			mu.Unlock()
			if f.whole != nil {
				if local := w.wholeFile(f, &e); local {
					if err := done(f); err != nil {
						return err
					}
					continue
				}
			}
			var off int64
			for _, ref := range e.Chunks {
				if ref.Slice {
					if pend != nil && (pend.ref.ID != ref.ID || len(pend.slices) >= maxSliceTargets) {
						if err := send(*pend); err != nil {
							return err
						}
						pend = nil
					}
					if pend == nil {
						pend = &restoreJob{ref: repo.Ref{ID: ref.ID}}
					}
					mu.Lock()
					f.pending++
					mu.Unlock()
					pend.slices = append(pend.slices, sliceTarget{f: f, ref: ref, off: off})
				} else if !ref.Hole {
					mu.Lock()
					f.pending++
					mu.Unlock()
					select {
					case jobs <- restoreJob{f: f, ref: ref, off: off}:
					case <-gctx.Done():
						return gctx.Err()
					}
				}
				off += ref.Size
			}
			if err := done(f); err != nil {
				return err
			}
		}
		if pend != nil {
			return send(*pend)
		}
		return nil
	})
	err := g.Wait()
	for _, f := range open {
		if f.old != nil {
			f.old.Close()
		}
	}
	return err
}

// recheck reads back the files before next, which an earlier attempt
// reported finished, and returns those that match the manifest: the size,
// the modification time (set last, so a file whose writing was cut short
// shows it) and the SHA-256 of each chunk. Holes are not read: nothing
// writes into them. Reading a local file back costs far less than fetching
// it, and it is what makes a file lost or torn by a crash (a power loss, a
// file system that did not keep what it acknowledged) rewritten rather than
// swapped in.
func (w *restorer) recheck(ctx context.Context, m *repo.Manifest, next int) (map[int]bool, error) {
	idx := make(chan int)
	var mu sync.Mutex
	ok := map[int]bool{}
	inPlace := false
	g, gctx := errgroup.WithContext(ctx)
	for range restoreWorkers {
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
					w.log.Warn().Str("path", e.Path).Str("problem", why).Msg("resumed restore: a file an earlier attempt reported finished failed its check; writing it again")
					continue
				}
				mu.Lock()
				ok[i] = true
				mu.Unlock()
				w.rep.update(func(p *Progress) { p.BytesDone += e.Size; p.FilesDone++ })
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
func (w *restorer) check(ctx context.Context, e *repo.Entry, buf []byte) (string, error) {
	f, err := w.rs.Staged(e.Path)
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
		return checkSHA256(ctx, f, e, buf)
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
func (w *restorer) put(ctx context.Context, j restoreJob) error {
	if data := w.fromTarget(j); data != nil {
		w.mu.Lock()
		w.res.Chunks++
		w.res.ChunksLocal++
		w.res.BytesLocal += int64(len(data))
		w.mu.Unlock()
		return w.writeChunk(j, data)
	}
	data, err := w.repo.GetChunk(ctx, j.ref.ID)
	if err != nil {
		if drivers.IsNotFound(err) {
			return drivers.Permanent(drivers.ReasonCorrupt, err)
		}
		return err
	}
	if int64(len(data)) != j.ref.Size {
		return drivers.Permanentf(drivers.ReasonCorrupt, "chunk %s at %s holds %d bytes, the manifest says %d", j.ref.ID, w.repo.Location(), len(data), j.ref.Size)
	}
	w.mu.Lock()
	w.res.Chunks++
	w.mu.Unlock()
	return w.writeChunk(j, data)
}

// fromTarget returns the chunk's bytes as the target's current file holds
// them at the same offset, when they hash to the chunk's id; nil otherwise.
func (w *restorer) fromTarget(j restoreJob) []byte {
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
func (w *restorer) writeChunk(j restoreJob, data []byte) error {
	if allZero(data) {
		w.rep.update(func(p *Progress) { p.BytesDone += int64(len(data)); p.ChunksDone++ })
		return nil
	}
	if _, err := j.f.fw.WriteAt(data, j.off); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	w.mu.Lock()
	w.res.BytesWritten += int64(len(data))
	w.mu.Unlock()
	w.rep.update(func(p *Progress) { p.BytesDone += int64(len(data)); p.ChunksDone++ })
	return nil
}

func allZero(b []byte) bool {
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

// ListPointsInput names the site whose restore points are listed.
type ListPointsInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
}

// PointInfo is one restore point as listed.
type PointInfo struct {
	Point    string    `json:"point"`
	Snapshot time.Time `json:"snapshot"`
	Size     int64     `json:"manifestSize"`
	Pinned   bool      `json:"pinned,omitempty"` // drorch points pin: retention keeps it
}

// ListPointsResult lists the restore points at a site, oldest first.
type ListPointsResult struct {
	Repository string      `json:"repository"`
	Epoch      uint64      `json:"epoch"`
	Points     []PointInfo `json:"points"`
}

// ListPoints lists the valid restore points at a site (those whose manifest
// was written).
func (a *Activities) ListPoints(ctx context.Context, in ListPointsInput) (ListPointsResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	pts, err := r.Points(ctx)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	pins, err := r.Pins(ctx)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	res := ListPointsResult{Repository: r.Location(), Epoch: ep.Epoch, Points: []PointInfo{}}
	for _, p := range pts {
		_, pinned := pins[p.ID]
		res.Points = append(res.Points, PointInfo{Point: p.ID, Snapshot: p.Time, Size: p.Size, Pinned: pinned})
	}
	return res, nil
}
