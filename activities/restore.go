package activities

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// PrepareRestoreInput names a restore point and where it goes.
type PrepareRestoreInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point,omitempty"` // empty: latest at Site
	To    string `json:"to,omitempty"`    // empty: the plan's source at Site
}

// PrepareRestoreResult describes what will be restored where.
type PrepareRestoreResult struct {
	PointSummary
	Target    string `json:"target"`
	SiteEpoch uint64 `json:"siteEpoch"`
}

// PrepareRestore reads and verifies the manifest, checks that every chunk it
// names is in the site's repository and that the target is usable.
func (a *Activities) PrepareRestore(ctx context.Context, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	res, err := a.prepareRestore(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) prepareRestore(ctx context.Context, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	tgt, err := a.target(in.Plan, in.Site, in.To)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	m, err := a.manifest(ctx, r, in.Point)
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
	return PrepareRestoreResult{PointSummary: summary(m, in.Site), Target: tgt.Describe(), SiteEpoch: ep.Epoch}, nil
}

// RestoreDataInput names the restore to perform.
type RestoreDataInput struct {
	Plan      string `json:"plan"`
	Site      string `json:"site"`
	Op        string `json:"op"` // restore id: names the staging beside the target
	Point     string `json:"point"`
	To        string `json:"to,omitempty"`
	SiteEpoch uint64 `json:"siteEpoch"`
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
}

type restoreResume struct {
	Next      int               `json:"next"` // first entry not yet fully written
	Committed bool              `json:"committed"`
	Result    RestoreDataResult `json:"result"`
}

const restoreWorkers = 16

// RestoreData writes the restore point into a staging area beside the target,
// verifying every chunk against its id, then moves it into place. A corrupt
// chunk stops the restore with an error naming it, and the staging is
// removed: the target never receives a byte that did not verify. A retried
// attempt continues after the last file it finished.
func (a *Activities) RestoreData(ctx context.Context, in RestoreDataInput) (RestoreDataResult, error) {
	res, err := a.restoreData(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) restoreData(ctx context.Context, in RestoreDataInput) (RestoreDataResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return RestoreDataResult{}, err
	}
	tgt, err := a.target(in.Plan, in.Site, in.To)
	if err != nil {
		return RestoreDataResult{}, err
	}
	var st restoreResume
	if resumeDetails(ctx, &st) && st.Committed {
		return st.Result, nil
	}
	m, err := r.GetManifest(ctx, in.Point)
	if err != nil {
		return RestoreDataResult{}, err
	}
	if err := checkEpoch(ctx, r, in.SiteEpoch, "restore "+in.Point); err != nil {
		return RestoreDataResult{}, err
	}
	rs, err := tgt.Begin(ctx, in.Op)
	if err != nil {
		return RestoreDataResult{}, fmt.Errorf("begin restore into %s: %w", tgt.Describe(), err)
	}
	if !rs.Resumed() {
		// Nothing staged survived (another host, or it was cleaned up):
		// every file must be written again, whatever the heartbeat says.
		st = restoreResume{}
	}
	rep := a.startReporter(ctx, "restore")
	defer rep.close()
	rep.update(func(p *Progress) { p.BytesTotal, p.FilesTotal = m.Totals.Bytes, m.Totals.Files })

	w := &restorer{repo: r, rs: rs, rep: rep, res: st.Result}
	if l, ok := tgt.(localFiles); ok {
		w.local = l
	}
	w.res.Target = tgt.Describe()
	err = w.run(ctx, m, st.Next)
	if err != nil {
		if _, corrupt := drivers.IsPermanent(err); corrupt {
			if aerr := rs.Abort(); aerr != nil {
				a.log.Error().Err(aerr).Str("target", tgt.Describe()).Msg("removing the staged restore failed")
			}
		}
		return RestoreDataResult{}, err
	}
	if err := a.swap(ctx, in, r, rs); err != nil {
		return RestoreDataResult{}, err
	}
	res := w.result()
	res.Entries, res.Files, res.Bytes = m.Totals.Entries, m.Totals.Files, m.Totals.Bytes
	rep.resume(restoreResume{Next: len(m.Entries), Committed: true, Result: res})
	return res, nil
}

// localFiles opens the files the target holds now, before the restore
// replaces them (the dir driver's Open: regular files only, no symlink
// followed).
type localFiles interface {
	Open(ctx context.Context, path string) (source.File, error)
}

// restorer writes the entries of a manifest into a staged restore.
type restorer struct {
	repo  *repo.Repo
	rs    source.Restore
	rep   *reporter
	local localFiles // nil: fetch every chunk

	mu  sync.Mutex
	res RestoreDataResult
}

func (w *restorer) result() RestoreDataResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.res
}

// openFile is a file being written by the chunk workers; the last chunk to
// finish closes it.
type openFile struct {
	index   int
	fw      source.FileWriter
	old     source.File // what the target holds at this path now, or nil
	pending int
	err     error
}

type restoreJob struct {
	f   *openFile
	ref repo.Ref
	off int64
}

// run replays directories and symlinks from the start (cheap, and the
// target needs them to apply modes at commit), and files from next on.
func (w *restorer) run(ctx context.Context, m *repo.Manifest, next int) error {
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
		if err := f.fw.Close(); err != nil {
			return fmt.Errorf("finish %q: %w", m.Entries[f.index].Path, err)
		}
		mu.Lock()
		delete(open, f.index)
		low := len(m.Entries)
		for i := range open {
			low = min(low, i)
		}
		mu.Unlock()
		w.mu.Lock()
		w.res.Files++
		res := w.res
		w.mu.Unlock()
		w.rep.update(func(p *Progress) { p.FilesDone = res.Files })
		w.rep.resume(restoreResume{Next: min(low, f.index+1), Result: res})
		return nil
	}
	for range restoreWorkers {
		g.Go(func() error {
			for j := range jobs {
				if err := w.write(gctx, j); err != nil {
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
			if i < next {
				continue
			}
			fw, err := w.rs.File(se)
			if err != nil {
				return err
			}
			f := &openFile{index: i, fw: fw, pending: 1} // the extra 1 is released below
			if w.local != nil && e.Size > 0 {
				if old, err := w.local.Open(gctx, e.Path); err == nil {
					f.old = old
				}
			}
			mu.Lock()
			open[i] = f
			mu.Unlock()
			var off int64
			for _, ref := range e.Chunks {
				if !ref.Hole {
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

// write fetches one chunk, verifies it and writes it at its offset. An
// all-zero chunk is not written, so the file keeps a hole there.
func (w *restorer) write(ctx context.Context, j restoreJob) error {
	if data := w.fromTarget(j); data != nil {
		w.mu.Lock()
		w.res.Chunks++
		w.res.ChunksLocal++
		w.res.BytesLocal += int64(len(data))
		w.mu.Unlock()
		return w.put(j, data)
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
	return w.put(j, data)
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

// put writes a verified chunk at its offset.
func (w *restorer) put(j restoreJob, data []byte) error {
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
	res := ListPointsResult{Repository: r.Location(), Epoch: ep.Epoch, Points: []PointInfo{}}
	for _, p := range pts {
		res.Points = append(res.Points, PointInfo{Point: p.ID, Snapshot: p.Time, Size: p.Size})
	}
	return res, nil
}
