package activities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// PrepareSiteInput names the site whose repository is prepared.
type PrepareSiteInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
}

// PrepareSiteResult describes the prepared repository.
type PrepareSiteResult struct {
	Repository string `json:"repository"`
	Epoch      uint64 `json:"epoch"`
}

// PrepareSite checks that the site's store answers and accepts writes,
// creates the bucket when missing, and records epoch 1 in a new repository.
func (a *Activities) PrepareSite(ctx context.Context, in PrepareSiteInput) (PrepareSiteResult, error) {
	res, err := a.prepareSite(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) prepareSite(ctx context.Context, in PrepareSiteInput) (PrepareSiteResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return PrepareSiteResult{}, err
	}
	if err := r.Store().Prepare(ctx); err != nil {
		return PrepareSiteResult{}, fmt.Errorf("prepare repository %s: %w", r.Location(), err)
	}
	ep, err := r.UpdateEpoch(ctx, func(e *repo.Epoch) error {
		if e.Epoch != 0 {
			return repo.ErrNoChange
		}
		e.Epoch, e.Site, e.Reason, e.Updated = 1, in.Site, "repository created", time.Now().UTC()
		return nil
	})
	if err != nil {
		return PrepareSiteResult{}, err
	}
	return PrepareSiteResult{Repository: r.Location(), Epoch: ep.Epoch}, nil
}

// SnapshotInput names the backup whose snapshot is taken.
type SnapshotInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
	Op   string `json:"op"` // staging name of this backup
	// FromSnapshot lists the view SourceSnapshot made, not the live tree.
	FromSnapshot bool `json:"fromSnapshot,omitempty"`
}

// SnapshotResult describes the point-in-time listing of the source.
type SnapshotResult struct {
	Source   string    `json:"source"`
	Kind     string    `json:"kind,omitempty"` // the manifest's source kind; "" is dir
	Snapshot time.Time `json:"snapshot"`
	Entries  int64     `json:"entries"`
	Files    int64     `json:"files"`
	Bytes    int64     `json:"bytes"`
	Skipped  int64     `json:"skipped"` // devices, FIFOs and sockets
	Pieces   int       `json:"pieces"`
}

// Snapshot lists the source and stores the listing, cut into pieces, in the
// repository's staging area. A retried attempt that finds a finished
// snapshot returns it unchanged, so the backup reads the tree it listed.
func (a *Activities) Snapshot(ctx context.Context, in SnapshotInput) (SnapshotResult, error) {
	res, err := a.snapshot(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) snapshot(ctx context.Context, in SnapshotInput) (SnapshotResult, error) {
	if pg, err := a.postgresAt(in.Plan, in.Site); err != nil || pg != nil {
		if err != nil {
			return SnapshotResult{}, err
		}
		return a.snapshotPostgres(ctx, in, pg) // pgbackup.go
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return SnapshotResult{}, err
	}
	if sc, ok := a.isExec(in.Plan, in.Site); ok {
		return a.snapshotStream(ctx, r, sc, in)
	}
	var res SnapshotResult
	if err := r.GetStaging(ctx, in.Op, snapshotName, &res); err == nil {
		// The record is written after every piece, each acknowledged by
		// the store; still, what a later step relies on is checked.
		missing, err := firstMissing(ctx, r, in.Op, pieceName, res.Pieces)
		if err != nil {
			return SnapshotResult{}, err
		}
		if missing == res.Pieces {
			return res, nil
		}
		a.log.Warn().Str("plan", in.Plan).Str("op", in.Op).Int("piece", missing).Msg("the finished snapshot's piece is missing from staging: listing the source again")
		if err := r.DeleteStaging(ctx, in.Op); err != nil {
			return SnapshotResult{}, err
		}
	} else if !drivers.IsNotFound(err) {
		return SnapshotResult{}, err
	}
	_, src, live, err := a.readSource(in.Plan, in.Site, in.Op, in.FromSnapshot)
	if err != nil {
		return SnapshotResult{}, err
	}
	if err := src.Check(ctx); err != nil {
		if drivers.IsNotFound(err) {
			// A missing source is for the operator to fix; retrying for
			// hours would only hide it.
			err = drivers.Permanent(drivers.ReasonNotFound, err)
		}
		return SnapshotResult{}, fmt.Errorf("check source %s: %w", src.Describe(), err)
	}
	rep := a.startReporter(ctx, "snapshot")
	defer rep.close()
	ctx = rep.work // ends when the work stalls

	res = SnapshotResult{Source: live, Snapshot: time.Now().UTC()}
	sp := splitter{emit: func(p piece) error {
		if err := r.PutStaging(ctx, in.Op, pieceName(res.Pieces), p); err != nil {
			return err
		}
		res.Pieces++
		return nil
	}}
	var index int64
	err = src.Scan(ctx, func(e source.Entry) error {
		if e.Type == source.TypeOther {
			res.Skipped++
			a.log.Warn().Str("plan", in.Plan).Str("path", e.Path).Msg("skipping a device, FIFO or socket: it cannot be backed up")
			return nil
		}
		if err := sp.addEntry(index, e); err != nil {
			return err
		}
		index++
		res.Entries++
		if e.Type == source.TypeFile {
			res.Files++
			res.Bytes += e.Size
		}
		rep.Update(func(p *Progress) { p.FilesDone, p.BytesTotal = res.Files, res.Bytes })
		return nil
	})
	if err == nil {
		err = sp.flush()
	}
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("snapshot %s: %w", src.Describe(), err)
	}
	if res.Entries == 0 {
		return SnapshotResult{}, drivers.Permanentf(drivers.ReasonInvalidInput, "snapshot %s: the source is empty", src.Describe())
	}
	if err := r.PutStaging(ctx, in.Op, snapshotName, res); err != nil {
		return SnapshotResult{}, err
	}
	return res, nil
}

// UploadInput names the snapshot whose data is uploaded.
type UploadInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	Op     string `json:"op"`
	Pieces int    `json:"pieces"`
	Bytes  int64  `json:"bytes"` // total, for progress
	// Full reads every file. Otherwise a file whose size and modification
	// time match the latest restore point's is not read again: its chunks
	// are taken from that point (when the repository still has them).
	Full bool `json:"full,omitempty"`
	// FromSnapshot reads the view SourceSnapshot made, not the live tree.
	FromSnapshot bool `json:"fromSnapshot,omitempty"`
	// From and To bound the pieces this activity uploads, [From, To);
	// To 0 is every piece. Several activities upload one snapshot's
	// ranges in parallel (docs/scaleout.md).
	From int `json:"from,omitempty"`
	To   int `json:"to,omitempty"`
}

// UploadResult counts what the upload read and stored.
type UploadResult struct {
	BytesRead   int64 `json:"bytesRead"`
	BytesNew    int64 `json:"bytesNew"`    // plaintext bytes of chunks the repository lacked
	BytesStored int64 `json:"bytesStored"` // what those chunks took after compression and encryption
	Chunks      int64 `json:"chunks"`
	ChunksNew   int64 `json:"chunksNew"`
	Reread      int64 `json:"reread"` // files read again because they changed while being read
	// Unchanged counts files taken from the parent restore point without
	// reading them; BytesUnchanged is their size.
	Unchanged      int64  `json:"unchanged"`
	BytesUnchanged int64  `json:"bytesUnchanged"`
	Parent         string `json:"parent,omitempty"` // the restore point unchanged files came from
}

type uploadResume struct {
	Next   int          `json:"next"` // first piece not yet uploaded
	Result UploadResult `json:"result"`
}

// Upload chunks, hashes, compresses, encrypts and uploads the snapshot's
// files, piece by piece, sending only the chunks the repository lacks. Each
// finished piece is recorded in staging and in the heartbeat, so a retried
// attempt continues with the next piece.
func (a *Activities) Upload(ctx context.Context, in UploadInput) (UploadResult, error) {
	started := time.Now()
	res, err := a.upload(ctx, in)
	if err == nil {
		metrics.BackupBytes(in.Plan, in.Site, res.BytesStored)
		metrics.OperationDone("backup", time.Since(started))
	}
	return res, temporalError(err)
}

func (a *Activities) upload(ctx context.Context, in UploadInput) (UploadResult, error) {
	if pg, err := a.postgresAt(in.Plan, in.Site); err != nil || pg != nil {
		if err != nil {
			return UploadResult{}, err
		}
		return a.uploadPostgres(ctx, in, pg) // pgbackup.go
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return UploadResult{}, err
	}
	if _, ok := a.isExec(in.Plan, in.Site); ok {
		return a.uploadedStream(ctx, r, in)
	}
	sc, src, _, err := a.readSource(in.Plan, in.Site, in.Op, in.FromSnapshot)
	if err != nil {
		return UploadResult{}, err
	}
	from, to := in.pieceRange()
	st := uploadResume{Next: from}
	if resumeDetails(ctx, &st) {
		a.log.Info().Str("plan", in.Plan).Int("piece", st.Next).Msg("resuming upload")
		// Each piece was recorded in staging (a store PUT, durable once
		// acknowledged) before it was reported; the commit reads them all,
		// so a resumed attempt checks they are there and redoes from the
		// first that is not.
		missing, err := firstMissingFrom(ctx, r, in.Op, uploadedName, from, st.Next)
		if err != nil {
			return UploadResult{}, err
		}
		if missing < st.Next {
			a.log.Warn().Str("plan", in.Plan).Str("op", in.Op).Int("piece", missing).Msg("a piece reported uploaded has no record in staging: uploading from it again")
			st.Next = missing
		}
	}
	known, err := r.UsableChunks(ctx) // damaged chunks are uploaded again
	if err != nil {
		return UploadResult{}, fmt.Errorf("list chunks at %s: %w", r.Location(), err)
	}
	var parent *repo.Manifest
	if !in.Full {
		parent = a.parent(ctx, r)
	}
	rep := a.startReporter(ctx, "upload")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	rep.Update(func(p *Progress) { p.BytesTotal = in.Bytes })
	u := &uploader{
		repo: r, src: src, onChange: sc.OnChange, retries: sc.Retries, rep: rep, slots: a.storeSlots,
		known: make(map[repo.ID]struct{}, len(known)), res: st.Result,
	}
	if parent != nil {
		u.parent = make(map[string]*repo.Entry, len(parent.Entries))
		for i := range parent.Entries {
			if e := &parent.Entries[i]; e.Type == source.TypeFile {
				u.parent[e.Path] = e
			}
		}
		u.res.Parent = parent.Point
	}
	for id := range known {
		u.known[id] = struct{}{}
	}
	rep.Update(func(p *Progress) { u.fill(p) })
	if err := u.run(ctx, in.Op, st.Next, to); err != nil {
		return UploadResult{}, err
	}
	return u.result(), nil
}

// parent returns the latest restore point in r, whose unchanged files a
// backup need not read again; nil when there is none or it cannot be read
// (the backup then reads everything, which is always correct).
func (a *Activities) parent(ctx context.Context, r *repo.Repo) *repo.Manifest {
	pts, err := r.Points(ctx)
	if err != nil || len(pts) == 0 {
		return nil
	}
	m, err := r.GetManifest(ctx, pts[len(pts)-1].ID)
	if err != nil {
		a.log.Warn().Err(err).Str("repository", r.Location()).Msg("the latest restore point cannot be read: every file is read again")
		return nil
	}
	return m
}

// uploader moves the files of pieces into the repository.
type uploader struct {
	repo     *repo.Repo
	src      source.Source
	onChange string
	retries  int
	rep      *reporter
	parent   map[string]*repo.Entry // regular files of the parent point, by path
	slots    chan struct{}          // the worker's bound on chunks in flight; nil: none

	mu    sync.Mutex
	known map[repo.ID]struct{} // chunks present or being uploaded
	res   UploadResult
}

func (u *uploader) result() UploadResult {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.res
}

func (u *uploader) fill(p *Progress) {
	u.mu.Lock()
	defer u.mu.Unlock()
	p.BytesDone, p.BytesNew, p.ChunksDone, p.ChunksNew = u.res.BytesRead+u.res.BytesUnchanged, u.res.BytesNew, u.res.Chunks, u.res.ChunksNew
}

// claim reports whether id must be uploaded by the caller: it is neither in
// the repository nor being uploaded by another worker.
func (u *uploader) claim(id repo.ID) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.known[id]; ok {
		return false
	}
	u.known[id] = struct{}{}
	return true
}

// count applies f to the live totals and to the piece's own, so that the
// totals recorded with a finished piece (the resume point) hold only the
// work of finished pieces.
func (u *uploader) count(pp *pendingPiece, f func(r *UploadResult)) {
	u.mu.Lock()
	f(&u.res)
	f(&pp.res)
	u.mu.Unlock()
	u.rep.Update(u.fill)
}

// add adds the counts of b to a.
func (a *UploadResult) add(b UploadResult) {
	a.BytesRead += b.BytesRead
	a.BytesNew += b.BytesNew
	a.BytesStored += b.BytesStored
	a.Chunks += b.Chunks
	a.ChunksNew += b.ChunksNew
	a.Reread += b.Reread
	a.Unchanged += b.Unchanged
	a.BytesUnchanged += b.BytesUnchanged
}

// uploadWorkers bounds the chunks in flight (each holds at most ChunkMax
// bytes). The bench measured 8 faster than 16 on two cores shared with the
// object store: more only adds contention.
const uploadWorkers = 8

// chunkJob is one chunk on its way to the store; ref is filled in by the
// worker that hashes it.
type chunkJob struct {
	data  []byte
	ref   *repo.Ref
	id    *repo.ID // a run's chunk (smallfiles.go): only its id is filled in
	piece *pendingPiece
}

// pendingPiece is a piece whose files have been read and whose chunks are
// on their way; done counts the chunks still uploading.
type pendingPiece struct {
	index int
	out   uploaded
	refs  [][]*repo.Ref
	fix   []sliceFix // slice refs whose chunk id a worker fills in
	done  sync.WaitGroup
	res   UploadResult // this piece's counts; guarded by uploader.mu
}

// storeWorkers starts uploadWorkers goroutines in g that store the chunks
// sent on the returned channel, each marking its piece's chunk done; the
// sender closes it.
func (u *uploader) storeWorkers(ctx context.Context, g *errgroup.Group) chan chunkJob {
	jobs := make(chan chunkJob, uploadWorkers)
	for range uploadWorkers {
		g.Go(func() error {
			for j := range jobs {
				err := u.storeIn(ctx, j)
				j.piece.done.Done()
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	return jobs
}

// run uploads pieces next..pieces-1 as one pipeline: one goroutine reads and
// chunks files in order, workers hash and upload, and a recorder writes each
// piece's result to staging (and heartbeats it as the resume point) once all
// its chunks are stored. Reading the next piece does not wait for the last
// uploads of the previous one.
func (u *uploader) run(ctx context.Context, op string, next, pieces int) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := u.storeWorkers(gctx, g)
	read := make(chan *pendingPiece, 1) // at most two pieces ahead of the recorder
	// One chunker and its buffer serve every file, read in turn.
	ch, err := repo.NewChunker(nil, nil)
	if err != nil {
		return err
	}
	sr, err := newSmallRun()
	if err != nil {
		return err
	}
	g.Go(func() error {
		defer close(jobs)
		defer close(read)
		for i := next; i < pieces; i++ {
			var p piece
			if err := u.repo.GetStaging(gctx, op, pieceName(i), &p); err != nil {
				return fmt.Errorf("read snapshot piece %d: %w", i, err)
			}
			pp := &pendingPiece{index: i, out: uploaded{Items: make([]uploadedItem, len(p.Items))}, refs: make([][]*repo.Ref, len(p.Items))}
			sr.start(gctx, pp, jobs)
			for k, it := range p.Items {
				pp.out.Items[k] = uploadedItem{Index: it.Index, Entry: it.Entry, Offset: it.Offset}
				if it.Entry.Type != source.TypeFile {
					continue
				}
				e, refs, err := u.file(gctx, ch, sr, pp, k, it, jobs)
				if err != nil {
					return err
				}
				pp.out.Items[k].Entry = e
				if refs != nil { // a small file's refs are the run's slices
					pp.refs[k] = refs
				}
			}
			if err := sr.flush(); err != nil {
				return err
			}
			select {
			case read <- pp:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	g.Go(func() error {
		u.mu.Lock()
		committed := u.res // what earlier attempts recorded
		u.mu.Unlock()
		for pp := range read {
			waited := make(chan struct{})
			go func() { pp.done.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-gctx.Done():
				return gctx.Err()
			}
			for _, f := range pp.fix {
				f.ref.ID = *f.id
			}
			for k, refs := range pp.refs {
				for _, r := range refs {
					pp.out.Items[k].Refs = append(pp.out.Items[k].Refs, *r)
				}
			}
			if err := u.repo.PutStaging(gctx, op, uploadedName(pp.index), pp.out); err != nil {
				return err
			}
			u.mu.Lock()
			committed.add(pp.res)
			u.mu.Unlock()
			u.rep.Resume(uploadResume{Next: pp.index + 1, Result: committed})
		}
		u.mu.Lock()
		u.res = committed
		u.mu.Unlock()
		return nil
	})
	err = g.Wait()
	// Release what no worker took, so no waiter is left behind.
	for j := range jobs {
		j.piece.done.Done()
	}
	return err
}

// storeIn stores a chunk within the worker's bound on chunks in flight.
func (u *uploader) storeIn(ctx context.Context, j chunkJob) error {
	if u.slots != nil {
		select {
		case u.slots <- struct{}{}:
			defer func() { <-u.slots }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return u.store(ctx, j)
}

// store hashes a chunk and uploads it unless the repository has it.
func (u *uploader) store(ctx context.Context, j chunkJob) error {
	data := j.data
	id := repo.Hash(data)
	if j.id != nil {
		*j.id = id
	} else {
		*j.ref = repo.Ref{ID: id, Size: int64(len(data))}
	}
	if !u.claim(id) {
		u.count(j.piece, func(r *UploadResult) { r.Chunks++ })
		return nil
	}
	stored, err := u.repo.PutChunk(ctx, id, data)
	if err != nil {
		u.mu.Lock()
		delete(u.known, id)
		u.mu.Unlock()
		return fmt.Errorf("upload chunk %s: %w", id, err)
	}
	u.count(j.piece, func(r *UploadResult) {
		r.Chunks++
		r.ChunksNew++
		r.BytesNew += int64(len(data))
		r.BytesStored += stored
	})
	return nil
}

// unchanged returns the references of the segment [off, off+n) of e taken
// from the parent point, when the file there has the same size and
// modification time and every chunk is still in the repository.
func (u *uploader) unchanged(e source.Entry, off, n int64) ([]*repo.Ref, bool) {
	p, ok := u.parent[e.Path]
	if !ok || p.Size != e.Size || !p.ModTime.Equal(e.ModTime) {
		return nil, false
	}
	if p.SHA256 != "" && (off != 0 || n != p.Size) {
		return nil, false // slices stand only for the whole file
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var refs []*repo.Ref
	var pos, got int64
	for i := range p.Chunks {
		ref := p.Chunks[i]
		start, end := pos, pos+ref.Size
		pos = end
		if end <= off || start >= off+n {
			continue
		}
		if start < off || end > off+n {
			return nil, false // the parent was cut differently: read the file
		}
		if _, ok := u.known[ref.ID]; !ref.Hole && !ok {
			return nil, false
		}
		refs = append(refs, &ref)
		got += ref.Size
	}
	return refs, got == n
}

// errChanged reports a file that changed while it was read.
var errChanged = errors.New("changed while being read")

// file reads one file (or segment) into chunk jobs. A file that changes while
// it is read is read again when the plan allows, with its new size and time;
// it is never stored torn.
func (u *uploader) file(ctx context.Context, ch *repo.Chunker, sr *smallRun, pp *pendingPiece, k int, it item, jobs chan<- chunkJob) (stagedEntry, []*repo.Ref, error) {
	e := it.Entry.source()
	if refs, ok := u.unchanged(e, it.Offset, it.Length); ok {
		pp.out.Items[k].Sum = u.parent[e.Path].SHA256
		u.count(pp, func(r *UploadResult) {
			if it.Offset == 0 { // count a segmented file once
				r.Unchanged++
			}
			r.BytesUnchanged += it.Length
			r.Chunks += int64(len(refs))
		})
		return it.Entry, refs, nil
	}
	for attempt := 0; ; attempt++ {
		var refs []*repo.Ref
		var read int64
		var err error
		if isSmall(e, it) {
			// Read whole, then appended to the run: a torn read never
			// reaches it.
			var data []byte
			var sum string
			data, sum, err = u.readWhole(ctx, e)
			read = int64(len(data))
			if err == nil {
				pp.out.Items[k].Sum = sum
				err = sr.add(k, data)
			}
		} else {
			refs, read, err = u.read(ctx, ch, pp, e, it.Offset, it.Length, jobs)
		}
		u.count(pp, func(r *UploadResult) { r.BytesRead += read })
		if err == nil {
			return stage(e), refs, nil
		}
		if !errors.Is(err, errChanged) {
			return stagedEntry{}, nil, err
		}
		segmented := it.Offset != 0 || it.Length < e.Size
		if u.onChange == "fail" || segmented || attempt >= u.retries {
			why := fmt.Sprintf("on-change policy %q", u.onChange)
			if segmented {
				why = "it is larger than one segment, so a re-read cannot be made consistent; quiesce the writer (a freeze hook) or use a snapshot-capable source"
			} else if u.onChange != "fail" {
				why = fmt.Sprintf("still changing after %d re-reads", attempt)
			}
			return stagedEntry{}, nil, drivers.Permanentf(drivers.ReasonSourceChanged, "file %q in %s changed while it was read (%s); the backup was stopped rather than store it torn", e.Path, u.src.Describe(), why)
		}
		// Wait for in-flight chunks of the torn read before reading it again.
		// They are harmless: content-addressed, and referenced by nothing.
		u.count(pp, func(r *UploadResult) { r.Reread++ })
		f, err := u.src.Open(ctx, e.Path)
		if err != nil {
			return stagedEntry{}, nil, err
		}
		size, mtime, err := f.Stat()
		f.Close()
		if err != nil {
			return stagedEntry{}, nil, err
		}
		e.Size, e.ModTime = size, mtime
		it.Length = size
		select {
		case <-ctx.Done():
			return stagedEntry{}, nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
}

// read chunks [off, off+n) of the file e, skipping holes, and returns the
// references (filled in as the workers hash) and the bytes read.
func (u *uploader) read(ctx context.Context, ch *repo.Chunker, pp *pendingPiece, e source.Entry, off, n int64, jobs chan<- chunkJob) ([]*repo.Ref, int64, error) {
	f, err := u.src.Open(ctx, e.Path)
	if err != nil {
		if drivers.IsNotFound(err) {
			return nil, 0, fmt.Errorf("file %q vanished since the snapshot: %w", e.Path, errChanged)
		}
		return nil, 0, fmt.Errorf("open %q: %w", e.Path, err)
	}
	defer f.Close()
	if changed, err := f.Changed(e); err != nil {
		return nil, 0, err
	} else if changed {
		return nil, 0, errChanged
	}
	regions, err := f.Regions(off, n)
	if err != nil {
		return nil, 0, fmt.Errorf("find data regions of %q: %w", e.Path, err)
	}
	regions = coalesce(regions, repo.ChunkMax)
	var refs []*repo.Ref
	var read int64
	pos := off
	for _, rg := range regions {
		if rg.Offset > pos {
			refs = append(refs, &repo.Ref{Hole: true, Size: rg.Offset - pos})
		}
		ch.Reset(io.NewSectionReader(f, rg.Offset, rg.Length))
		for {
			data, err := ch.Next()
			if len(data) > 0 {
				// The chunker reuses its buffer: the job gets a copy of
				// exactly the chunk's size.
				ref := &repo.Ref{}
				refs = append(refs, ref)
				pp.done.Add(1)
				select {
				case jobs <- chunkJob{data: bytes.Clone(data), ref: ref, piece: pp}:
				case <-ctx.Done():
					pp.done.Done()
					return nil, read, ctx.Err()
				}
				read += int64(len(data))
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, read, fmt.Errorf("read %q: %w", e.Path, err)
			}
		}
		pos = rg.Offset + rg.Length
	}
	if end := off + n; pos < end {
		refs = append(refs, &repo.Ref{Hole: true, Size: end - pos})
	}
	if changed, err := f.Changed(e); err != nil {
		return nil, read, err
	} else if changed {
		return nil, read, errChanged
	}
	return refs, read, nil
}

// coalesce joins data regions separated by holes shorter than gap: tiny holes
// would cost more as chunk boundaries than they save.
func coalesce(rs []source.Region, gap int64) []source.Region {
	var out []source.Region
	for _, r := range rs {
		if r.Length <= 0 {
			continue
		}
		if n := len(out); n > 0 && r.Offset-(out[n-1].Offset+out[n-1].Length) < gap {
			out[n-1].Length = r.Offset + r.Length - out[n-1].Offset
			continue
		}
		out = append(out, r)
	}
	return out
}

// CommitInput names the backup to commit as a restore point.
type CommitInput struct {
	Plan     string    `json:"plan"`
	Site     string    `json:"site"`
	Op       string    `json:"op"`
	Point    string    `json:"point"`
	Snapshot time.Time `json:"snapshot"`
	Pieces   int       `json:"pieces"`
	Epoch    uint64    `json:"epoch"` // the epoch the backup started with
}

// CommitResult describes the committed restore point.
type CommitResult struct {
	Point  string      `json:"point"`
	Totals repo.Totals `json:"totals"`
}

// Commit assembles the manifest from the uploaded pieces, checks that every
// chunk it names is in the repository, and writes the manifest last, by the
// commit rule of repo.CommitPoint: a failover that raises the epoch past the
// one the backup started with, before or during the commit, makes it fail
// with "superseded" and the point never valid. Until then the restore point
// does not exist.
func (a *Activities) Commit(ctx context.Context, in CommitInput) (CommitResult, error) {
	res, err := a.commit(ctx, in)
	if err == nil {
		metrics.PointCommitted(in.Plan, in.Site, in.Snapshot)
	}
	return res, temporalError(err)
}

func (a *Activities) commit(ctx context.Context, in CommitInput) (CommitResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return CommitResult{}, err
	}
	if m, err := r.GetManifest(ctx, in.Point); err == nil {
		// A previous attempt committed and then lost its answer.
		return CommitResult{Point: m.Point, Totals: m.Totals}, r.DeleteStaging(ctx, in.Op)
	} else if !drivers.IsNotFound(err) {
		return CommitResult{}, err
	}
	m, err := assembleManifest(ctx, r, in)
	if err != nil {
		return CommitResult{}, err
	}
	// The point is reserved before the chunks are listed (seconds to
	// minutes), so that a failover landing meanwhile abandons it.
	err = r.CommitPoint(ctx, m, func(ctx context.Context) error {
		present, err := r.Chunks(ctx)
		if err != nil {
			return err
		}
		return r.CheckPresent("commit "+in.Point, repo.Needs(m), present)
	})
	if err != nil {
		return CommitResult{}, err
	}
	if err := r.DeleteStaging(ctx, in.Op); err != nil {
		a.log.Warn().Err(err).Str("op", in.Op).Msg("staging left behind")
	}
	return CommitResult{Point: m.Point, Totals: m.Totals}, nil
}

// assembleManifest builds the manifest of a backup from its staged upload
// records. A record that is gone (the staging was cleaned up or lost) is
// permanent: no retry brings it back, the backup must run again.
func assembleManifest(ctx context.Context, r *repo.Repo, in CommitInput) (*repo.Manifest, error) {
	kind, err := stagedKind(ctx, r, in.Op)
	if err != nil {
		return nil, err
	}
	m := r.NewManifest(in.Point, in.Site, kind, in.Snapshot, in.Epoch)
	last := int64(-1)
	for i := range in.Pieces {
		var up uploaded
		if err := r.GetStaging(ctx, in.Op, uploadedName(i), &up); err != nil {
			if drivers.IsNotFound(err) {
				return nil, drivers.Permanentf(drivers.ReasonNotFound, "commit %s: the record of uploaded piece %d is gone from %s (staging cleaned up or lost): run the backup again", in.Point, i, r.Location())
			}
			return nil, fmt.Errorf("read uploaded piece %d: %w", i, err)
		}
		for _, it := range up.Items {
			if it.Index == last && it.Offset > 0 {
				// The next segment of the file already begun.
				cur := &m.Entries[len(m.Entries)-1]
				cur.Chunks = append(cur.Chunks, it.Refs...)
				continue
			}
			e := it.Entry.manifest(it.Refs)
			e.SHA256 = it.Sum // format v2: a file of slices
			m.Entries = append(m.Entries, e)
			last = it.Index
		}
	}
	m.ComputeTotals()
	return m, nil
}

// checkEpoch refuses to act on a repository whose epoch has moved past the
// one the operation started with: a failover made another site active, and
// this operation must not overwrite its data.
func checkEpoch(ctx context.Context, r *repo.Repo, started uint64, what string) error {
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return err
	}
	if ep.Epoch > started {
		return drivers.Permanentf(drivers.ReasonFenced, "%s: %s is at epoch %d (set by site %s: %s), newer than epoch %d this operation started with; refusing to act against it", what, r.Location(), ep.Epoch, ep.Site, ep.Reason, started)
	}
	return nil
}
