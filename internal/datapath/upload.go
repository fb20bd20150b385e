package datapath

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// UploadResult counts what an upload read and stored. It is the result of
// the Upload activity as recorded in workflow histories: fields are added,
// never renamed.
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

// UploadResume is what an upload reports through Reporter.Resume each time
// a piece is recorded in staging: Result holds the counts of the finished
// pieces only.
type UploadResume struct {
	Next   int          `json:"next"` // first piece not yet uploaded
	Result UploadResult `json:"result"`
}

// Uploader moves data into a repository: the files of a snapshot's pieces
// (Upload), a command's stream (Stream) or a stream of entries such as a tar
// (Entries). It chunks, hashes and stores only the chunks the repository
// lacks, UploadWorkers at a time. Make one with NewUploader, set the
// exported fields, then call one of those once.
type Uploader struct {
	// Source is what Upload reads the files from.
	Source source.Source
	// OnChange and Retries are the plan's policy for a file that changes
	// while it is read: "fail" stops, otherwise it is read again up to
	// Retries times.
	OnChange string
	Retries  int
	// Slots, when set, bounds the chunks being hashed and stored at once
	// across every Uploader that shares it (a worker's).
	Slots chan struct{}

	repo *repo.Repo
	rep  Reporter
	// parent finds the entries of the parent point by path, paging its
	// entries in: the files are looked up in snapshot order, which is the
	// point's tree order, so memory is one part of the point, not its
	// every file. Used by the reading goroutine only (a Cursor is not safe
	// for concurrent use); nil when there is no parent, or it was dropped.
	parent      *repo.Cursor
	parentPoint string

	mu    sync.Mutex
	known map[repo.ID]struct{} // chunks present or being uploaded
	res   UploadResult
}

// NewUploader returns an Uploader into r that takes the chunks of known as
// present (r.UsableChunks: a damaged chunk is stored again) and reports to
// rep.
func NewUploader(r *repo.Repo, known map[repo.ID]int64, rep Reporter) *Uploader {
	u := &Uploader{repo: r, rep: rep, known: make(map[repo.ID]struct{}, len(known))}
	for id := range known {
		u.known[id] = struct{}{}
	}
	return u
}

// SetParent makes Upload take a file whose size and modification time match
// its entry in p from there, without reading it (when the repository still
// has its chunks). p is shared, read only; the Uploader has a Cursor of its
// own.
func (u *Uploader) SetParent(p *repo.Point) {
	u.parent = p.Cursor()
	u.parentPoint = p.Meta.Point
	u.mu.Lock()
	u.res.Parent = p.Meta.Point
	u.mu.Unlock()
}

// parentFile returns the regular file at path in the parent point, nil when
// there is none. The entry is the caller's until the next call. A parent
// whose entries turn out corrupt (a permanent error) is dropped: the rest of
// the upload reads every file, which is always correct; another error is
// returned, and the attempt's retry resumes at its piece.
func (u *Uploader) parentFile(ctx context.Context, path string) (*repo.Entry, error) {
	if u.parent == nil {
		return nil, nil
	}
	e, err := u.parent.Find(ctx, path)
	if err != nil {
		if _, permanent := drivers.IsPermanent(err); permanent && ctx.Err() == nil {
			u.parent = nil // the files taken before stay its
			return nil, nil
		}
		return nil, fmt.Errorf("look up %q in the parent restore point %s: %w", path, u.parentPoint, err)
	}
	if e == nil || e.Type != source.TypeFile {
		return nil, nil
	}
	return e, nil
}

// Result returns the counts so far: the whole upload's once it returned nil.
func (u *Uploader) Result() UploadResult {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.res
}

func (u *Uploader) fill(p *Progress) {
	u.mu.Lock()
	defer u.mu.Unlock()
	p.BytesDone, p.BytesNew, p.ChunksDone, p.ChunksNew = u.res.BytesRead+u.res.BytesUnchanged, u.res.BytesNew, u.res.Chunks, u.res.ChunksNew
}

// claim reports whether id must be uploaded by the caller: it is neither in
// the repository nor being uploaded by another worker.
func (u *Uploader) claim(id repo.ID) bool {
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
func (u *Uploader) count(pp *pendingPiece, f func(r *UploadResult)) {
	u.mu.Lock()
	f(&u.res)
	f(&pp.res)
	u.mu.Unlock()
	u.rep.Update(u.fill)
}

// Add adds the counts of b to a.
func (a *UploadResult) Add(b UploadResult) {
	a.BytesRead += b.BytesRead
	a.BytesNew += b.BytesNew
	a.BytesStored += b.BytesStored
	a.Chunks += b.Chunks
	a.ChunksNew += b.ChunksNew
	a.Reread += b.Reread
	a.Unchanged += b.Unchanged
	a.BytesUnchanged += b.BytesUnchanged
}

// UploadWorkers bounds the chunks in flight (each holds at most ChunkMax
// bytes). The bench measured 8 faster than 16 on two cores shared with the
// object store: more only adds contention.
const UploadWorkers = 8

// chunkJob is one chunk on its way to the store; ref is filled in by the
// worker that hashes it.
type chunkJob struct {
	data  []byte
	ref   *repo.Ref
	piece *pendingPiece
}

// pendingPiece is a piece whose files have been read and whose chunks are
// on their way; done counts the chunks still uploading.
type pendingPiece struct {
	index int
	out   Uploaded
	refs  [][]*repo.Ref
	fix   []sliceFix // slice refs whose chunk id a worker fills in
	done  sync.WaitGroup
	res   UploadResult // this piece's counts; guarded by Uploader.mu
}

// storeWorkers starts UploadWorkers goroutines in g that store the chunks
// sent on the returned channel, each marking its piece's chunk done; the
// sender closes it.
func (u *Uploader) storeWorkers(ctx context.Context, g *errgroup.Group) chan chunkJob {
	jobs := make(chan chunkJob, UploadWorkers)
	for range UploadWorkers {
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

// Upload uploads the pieces next..pieces-1 of the snapshot staged as op,
// done holding what earlier attempts recorded for the pieces before next. It
// runs as one pipeline: one goroutine reads and chunks files in order,
// workers hash and upload, and a recorder writes each piece's result to
// staging (and reports it as an UploadResume) once all its chunks are
// stored. Reading the next piece does not wait for the last uploads of the
// previous one. A file that changed while it was read, beyond the plan's
// policy, is a drivers.Permanent error.
func (u *Uploader) Upload(ctx context.Context, op string, next, pieces int, done UploadResult) error {
	u.mu.Lock()
	parent := u.res.Parent
	u.res = done
	if parent != "" {
		u.res.Parent = parent
	}
	u.mu.Unlock()
	u.rep.Update(u.fill)
	read := make(chan *pendingPiece, 1) // at most two pieces ahead of the recorder
	return u.pipeline(ctx, func(ctx context.Context, s sender) error {
		defer close(read)
		return u.readPieces(ctx, s, op, next, pieces, read)
	}, func(ctx context.Context) error {
		return u.recordPieces(ctx, op, read)
	})
}

// readPieces reads the files of pieces next..pieces-1 in order, sends their
// chunks through s and each read piece on read.
func (u *Uploader) readPieces(ctx context.Context, s sender, op string, next, pieces int, read chan<- *pendingPiece) error {
	// One chunker and its buffer serve every file, read in turn.
	ch, err := repo.NewChunker(nil, nil)
	if err != nil {
		return err
	}
	sr, err := newSmallRun()
	if err != nil {
		return err
	}
	for i := next; i < pieces; i++ {
		var p Piece
		if err := u.repo.GetStaging(ctx, op, PieceName(i), &p); err != nil {
			return fmt.Errorf("read snapshot piece %d: %w", i, err)
		}
		pp := &pendingPiece{index: i, out: Uploaded{Items: make([]UploadedItem, len(p.Items))}, refs: make([][]*repo.Ref, len(p.Items))}
		sr.start(ctx, pp, s)
		for k, it := range p.Items {
			pp.out.Items[k] = UploadedItem{Index: it.Index, Entry: it.Entry, Offset: it.Offset}
			if it.Entry.Type != source.TypeFile {
				continue
			}
			e, refs, err := u.file(ctx, ch, sr, pp, k, it, s)
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
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// recordPieces writes each piece from read to staging once its chunks are
// stored, and reports it as the resume point.
func (u *Uploader) recordPieces(ctx context.Context, op string, read <-chan *pendingPiece) error {
	u.mu.Lock()
	committed := u.res // what earlier attempts recorded
	u.mu.Unlock()
	for pp := range read {
		if err := pp.settle(ctx); err != nil {
			return err
		}
		if err := u.repo.PutStaging(ctx, op, UploadedName(pp.index), pp.out); err != nil {
			return err
		}
		u.mu.Lock()
		committed.Add(pp.res)
		u.mu.Unlock()
		u.rep.Resume(UploadResume{Next: pp.index + 1, Result: committed})
	}
	u.mu.Lock()
	u.res = committed
	u.mu.Unlock()
	return nil
}

// storeIn stores a chunk within the worker's bound on chunks in flight.
func (u *Uploader) storeIn(ctx context.Context, j chunkJob) error {
	if u.Slots != nil {
		select {
		case u.Slots <- struct{}{}:
			defer func() { <-u.Slots }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return u.store(ctx, j)
}

// store hashes a chunk and uploads it unless the repository has it.
func (u *Uploader) store(ctx context.Context, j chunkJob) error {
	data := j.data
	id := repo.Hash(data)
	*j.ref = repo.Ref{ID: id, Size: int64(len(data))}
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
// from the parent entry p, when p has the same size and modification time
// and every chunk is still in the repository.
func (u *Uploader) unchanged(p *repo.Entry, e source.Entry, off, n int64) ([]*repo.Ref, bool) {
	if p == nil || p.Size != e.Size || !p.ModTime.Equal(e.ModTime) {
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
func (u *Uploader) file(ctx context.Context, ch *repo.Chunker, sr *smallRun, pp *pendingPiece, k int, it Item, s sender) (StagedEntry, []*repo.Ref, error) {
	e := it.Entry.Source()
	prev, err := u.parentFile(ctx, e.Path)
	if err != nil {
		return StagedEntry{}, nil, err
	}
	if refs, ok := u.unchanged(prev, e, it.Offset, it.Length); ok {
		pp.out.Items[k].Sum = prev.SHA256
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
			refs, read, err = u.read(ctx, ch, pp, e, it.Offset, it.Length, s)
		}
		u.count(pp, func(r *UploadResult) { r.BytesRead += read })
		if err == nil {
			return Stage(e), refs, nil
		}
		if !errors.Is(err, errChanged) {
			return StagedEntry{}, nil, err
		}
		segmented := it.Offset != 0 || it.Length < e.Size
		if u.OnChange == "fail" || segmented || attempt >= u.Retries {
			why := fmt.Sprintf("on-change policy %q", u.OnChange)
			if segmented {
				why = "it is larger than one segment, so a re-read cannot be made consistent; quiesce the writer (a freeze hook) or use a snapshot-capable source"
			} else if u.OnChange != "fail" {
				why = fmt.Sprintf("still changing after %d re-reads", attempt)
			}
			return StagedEntry{}, nil, drivers.Permanentf(drivers.ReasonSourceChanged, "file %q in %s changed while it was read (%s); the backup was stopped rather than store it torn", e.Path, u.Source.Describe(), why)
		}
		// Wait for in-flight chunks of the torn read before reading it again.
		// They are harmless: content-addressed, and referenced by nothing.
		u.count(pp, func(r *UploadResult) { r.Reread++ })
		f, err := u.Source.Open(ctx, e.Path)
		if err != nil {
			return StagedEntry{}, nil, err
		}
		size, mtime, err := f.Stat()
		f.Close()
		if err != nil {
			return StagedEntry{}, nil, err
		}
		e.Size, e.ModTime = size, mtime
		it.Length = size
		select {
		case <-ctx.Done():
			return StagedEntry{}, nil, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
}

// read chunks [off, off+n) of the file e, skipping holes, and returns the
// references (filled in as the workers hash) and the bytes read.
func (u *Uploader) read(ctx context.Context, ch *repo.Chunker, pp *pendingPiece, e source.Entry, off, n int64, s sender) ([]*repo.Ref, int64, error) {
	f, err := u.Source.Open(ctx, e.Path)
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
		got, err := s.chunks(ctx, ch, io.NewSectionReader(f, rg.Offset, rg.Length), pp, func(n int64) { read += n })
		if err != nil {
			if ctx.Err() != nil {
				return nil, read, ctx.Err()
			}
			return nil, read, fmt.Errorf("read %q: %w", e.Path, err)
		}
		refs = append(refs, got...)
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
