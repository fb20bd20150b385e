package repo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// Garbage collection (docs/format.md, "Garbage collection") deletes the
// chunks no stored manifest names, in two phases: a run first marks such a
// chunk (gc/mark), and only a later run, under the same epoch, deletes it,
// if it is still unnamed, has stayed marked at least GCMargin, and the run
// holds the sweep lease in epoch.json, which it takes only while no commit
// is pending and which keeps new commits from beginning until it is let go.

// GCMargin is how long a chunk must stay marked before a sweep may delete
// it: it protects the chunks a backup or transmit has uploaded but not yet
// committed (a commit's own chunks are protected by the sweep lease). A
// var only so that tests can shorten it; 24 h as in kopia.
var GCMargin = 24 * time.Hour

const (
	// sweepMax is the longest a sweep deletes chunks after it took the
	// lease, measured on the sweeper's monotonic clock from before it.
	sweepMax = 30 * time.Minute
	// sweepStale: a lease this old is a crashed sweeper's and no longer
	// holds commits back. sweepStale - sweepMax is the clock skew a
	// committer may have against the sweeper.
	sweepStale = 6 * time.Hour
	// pendingLive: a pending entry older than this no longer keeps a
	// sweep from beginning (see livePending).
	pendingLive = commitWindow + (sweepStale - sweepMax)

	gcMarkKey    = "gc/mark"
	gcMarkFormat = "drorch-gc-mark"
	markRecord   = 32 + 8 // chunk id, then since in Unix milliseconds, big-endian
)

// SweepLease is the lease in epoch.json of a garbage collection that is
// deleting chunks.
type SweepLease struct {
	ID    string    `json:"id"`    // the sweep's random id
	Since time.Time `json:"since"` // when it was taken, on the sweeper's clock
}

// sweeping refuses a new commit while a sweep holds the lease. It is
// transient: the commit is retried and goes ahead once the sweep is done.
func (r *Repo) sweeping(e Epoch, now time.Time) error {
	if e.Sweep == nil {
		return nil
	}
	if age := now.Sub(e.Sweep.Since); age > sweepStale || age < -sweepStale {
		return nil // a crashed sweeper's, or a clock far off: a new sweep replaces it
	}
	return fmt.Errorf("garbage collection has been deleting unused chunks at %s since %s (sweep %s); no commit may begin until it is done: try again in a few minutes (if its collector died, the lease expires at %s)",
		r.Location(), e.Sweep.Since.Format(time.RFC3339), e.Sweep.ID, e.Sweep.Since.Add(sweepStale).Format(time.RFC3339))
}

// GCOptions tune CollectGarbage.
type GCOptions struct {
	// DryRun changes nothing: the result says what a run would mark and
	// delete now.
	DryRun bool
	// NoSweep marks only, deleting nothing: a run that cannot rule out
	// a reader of a point being forgotten (a restore in progress).
	NoSweep string
	// Forgotten are points whose manifests count as deleted (for DryRun).
	Forgotten map[string]bool
	// SweepID identifies the run's sweep lease: the same for every attempt
	// of one run (a Temporal activity's workflow and activity ids), so that
	// a retry takes over the lease of an attempt whose worker died.
	SweepID string
	// Progress, when set, is called now and then with the stage and a count.
	Progress func(stage string, n int64)
}

// GCResult is what a garbage collection found and did.
type GCResult struct {
	Epoch       uint64 `json:"epoch"`
	Manifests   int    `json:"manifests"`  // stored manifests read (valid or not)
	Referenced  int    `json:"referenced"` // distinct chunks they name
	Chunks      int    `json:"chunks"`     // chunks stored
	ChunkBytes  int64  `json:"chunkBytes"`
	Marked      int    `json:"marked"` // unnamed chunks waiting to be deleted by a later run
	MarkedBytes int64  `json:"markedBytes"`
	NewlyMarked int    `json:"newlyMarked"`
	Unmarked    int    `json:"unmarked"` // marked before, named again
	Deleted     int    `json:"deleted"`
	Freed       int64  `json:"freed"` // bytes deleted
	Swept       bool   `json:"swept"` // the run held the sweep lease
	// MarginSeconds is GCMargin: how long a chunk stays marked before a
	// run may delete it.
	MarginSeconds float64 `json:"marginSeconds"`
	// NoSweep says why the run did not delete, when it did not.
	NoSweep string `json:"noSweep,omitempty"`
}

// ForgetPoint deletes the manifest of a restore point: it is no longer a
// restore point, and its chunks are garbage unless another manifest names
// them. Deleting an absent one is not an error. See retireManifest.
func (r *Repo) ForgetPoint(ctx context.Context, point string) error {
	if err := ValidPointID(point); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	if err := r.retireManifest(ctx, point); err != nil {
		return fmt.Errorf("forget restore point %s: %w", point, err)
	}
	return nil
}

// retireManifest deletes the manifest of point, first leaving a copy of it
// under gc/forgotten/: the next garbage collection counts the chunks it
// names as unnamed only from then on (since = now), whatever an older mark
// says, and then deletes the copy. Without it, a chunk marked before a
// point named it, that point deleted before any run saw it, would look
// unnamed ever since the old mark and be deleted at once, under a writer
// that had found it stored and skipped it (docs/format.md, "Garbage
// collection"). An absent manifest is not an error.
func (r *Repo) retireManifest(ctx context.Context, point string) error {
	body, err := r.get(ctx, manifestKey(point), MaxMetadataSize+1<<20)
	if errors.Is(err, drivers.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", r.where(manifestKey(point)), classify(err))
	}
	if err := r.put(ctx, forgottenKey(point), body); err != nil {
		return fmt.Errorf("write %s: %w", r.where(forgottenKey(point)), err)
	}
	if err := r.st.Delete(ctx, r.key(manifestKey(point))); err != nil {
		return fmt.Errorf("delete %s: %w", r.where(manifestKey(point)), err)
	}
	return nil
}

const gcForgottenDir = "gc/forgotten/"

func forgottenKey(point string) string { return gcForgottenDir + point + manifestExt }

// listPoints lists the ids of the manifests under dir, but those in skip.
func (r *Repo) listPoints(ctx context.Context, dir string, skip map[string]bool) ([]string, error) {
	var points []string
	prefix := r.key(dir)
	if err := r.list(ctx, prefix, func(o store.Object) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, prefix), manifestExt); ok && ValidPointID(id) == nil && !skip[id] {
			points = append(points, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("garbage collection: list manifests at %s: %w", r.where(dir), err)
	}
	return points, nil
}

// scanAll adds the chunk ids of the manifests of points stored under dir
// to set; a manifest deleted since the listing is skipped.
func (r *Repo) scanAll(ctx context.Context, dir string, points []string, set *idSet, progress func(string, int64)) error {
	for i, p := range points {
		if err := r.scanPoint(ctx, dir+p+manifestExt, p, set); err != nil {
			if drivers.IsNotFound(err) {
				continue // forgotten or abandoned and deleted since the listing
			}
			return fmt.Errorf("garbage collection at %s stopped, nothing deleted: %w", r.Location(), err)
		}
		if progress != nil {
			progress("manifests", int64(i+1))
		}
	}
	set.compact()
	return nil
}

// CollectGarbage marks the chunks no stored manifest names and deletes
// those a previous run marked under the same epoch at least GCMargin ago
// that are still unnamed, when it can take the sweep lease. It scans
// without the lease, takes it only to delete, and then reads the manifests
// stored since its scan first. Its memory is about 100 bytes per stored
// chunk at most: the named ids, sorted, and the marks; manifests and the
// chunk listing are streamed.
func (r *Repo) CollectGarbage(ctx context.Context, opt GCOptions) (res GCResult, err error) {
	res = GCResult{MarginSeconds: GCMargin.Seconds()}
	progress := opt.Progress
	if progress == nil {
		progress = func(string, int64) {}
	}
	now := time.Now().UTC()
	e, err := r.GetEpoch(ctx)
	if err != nil {
		return res, err
	}
	res.Epoch = e.Epoch
	switch {
	case opt.NoSweep != "":
		res.NoSweep = opt.NoSweep
	case opt.DryRun:
		if n := len(livePending(e, time.Now())); n > 0 {
			res.NoSweep = fmt.Sprintf("%d restore points are being committed", n)
		}
	}

	old, err := r.readMark(ctx)
	if err != nil {
		return res, err
	}
	if old != nil && old.Epoch != e.Epoch {
		old = nil // a mark of another epoch is void: the repository may hold what that epoch did not know
	}

	// Every stored manifest names chunks to keep: valid, pending (whose
	// manifests may be written already) or abandoned (kept until deleted).
	points, err := r.listPoints(ctx, pointsDir, opt.Forgotten)
	if err != nil {
		return res, err
	}
	var named idSet
	if err := r.scanAll(ctx, pointsDir, points, &named, progress); err != nil {
		return res, err
	}
	res.Manifests, res.Referenced = len(points), len(named.ids)
	// The copies of manifests deleted since (listed after the manifests: a
	// manifest gone from that listing left its copy before it went): their
	// chunks are unnamed from now on, whatever the old mark says.
	retired, err := r.listPoints(ctx, gcForgottenDir, nil)
	if err != nil {
		return res, err
	}
	var renamed idSet
	if err := r.scanAll(ctx, gcForgottenDir, retired, &renamed, nil); err != nil {
		return res, err
	}
	sweep := res.NoSweep == ""

	// Stream the chunk listing (in id order).
	next := &gcMark{Epoch: e.Epoch}
	if old != nil { // most marks stay: room for them and some more
		next.ids = make([]ID, 0, len(old.ids)+len(old.ids)/8+1024)
		next.times = make([]int64, 0, cap(next.ids))
	}
	var doomed []int32      // positions in next
	var doomedBytes []int32 // a chunk is at most 4 MiB + 64 KiB
	cprefix := r.key(chunksDir)
	err = r.list(ctx, cprefix, func(o store.Object) error {
		rel := strings.TrimPrefix(o.Key, cprefix)
		if len(rel) != 2+1+64 || rel[2] != '/' || rel[:2] != rel[3:5] {
			return nil
		}
		id, err := ParseID(rel[3:])
		if err != nil {
			return nil
		}
		res.Chunks++
		res.ChunkBytes += o.Size
		if res.Chunks%10000 == 0 {
			progress("chunks", int64(res.Chunks))
		}
		since, marked := old.since(id)
		if named.has(id) {
			if marked {
				res.Unmarked++
			}
			return nil
		}
		switch {
		case !marked:
			since = now
			res.NewlyMarked++
		case renamed.has(id):
			since = now // named by a manifest deleted since the last run
		case sweep && now.Sub(since) >= GCMargin:
			doomed = append(doomed, int32(len(next.ids)))
			doomedBytes = append(doomedBytes, int32(o.Size))
		}
		next.ids = append(next.ids, id)
		next.times = append(next.times, since.UnixMilli())
		res.Marked++
		res.MarkedBytes += o.Size
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("garbage collection: list chunks at %s: %w", r.where(chunksDir), err)
	}
	named, renamed = idSet{}, idSet{}
	old = nil // done with it: let the memory go before the writes
	uncount := func() {
		for _, n := range doomedBytes {
			res.MarkedBytes -= int64(n)
		}
		res.Marked -= len(doomed)
	}
	if opt.DryRun {
		res.Deleted = len(doomed)
		for _, n := range doomedBytes {
			res.Freed += int64(n)
		}
		uncount()
		return res, nil
	}

	// The lease, only now: with it held and nothing pending, every manifest
	// that will ever name a chunk this run may delete is stored already;
	// those stored since the scan are read before deleting.
	if sweep {
		took := time.Now()
		var lease *SweepLease
		lease, res.NoSweep, err = r.takeSweep(ctx, opt.SweepID)
		if err != nil {
			return res, err
		}
		if lease != nil {
			defer func() {
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
				defer cancel()
				if rerr := r.letGoSweep(cctx, *lease); rerr != nil && err == nil {
					err = rerr
				}
			}()
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, took.Add(sweepMax))
			defer cancel()
			res.Swept = true
			if res.NoSweep, err = r.recheck(ctx, e.Epoch, points, opt.Forgotten, next, &doomed, &doomedBytes); err != nil {
				return res, err
			}
		}
		if res.NoSweep != "" {
			doomed, doomedBytes = nil, nil
		}
	}
	// Mark before deleting: what a run cut short did not delete, the next
	// deletes.
	if err := r.writeMark(ctx, next); err != nil {
		return res, err
	}
	for _, p := range retired { // counted in the mark now
		if err := r.st.Delete(ctx, r.key(forgottenKey(p))); err != nil {
			return res, fmt.Errorf("garbage collection: delete %s: %w", r.where(forgottenKey(p)), err)
		}
	}
	if len(doomed) == 0 {
		return res, nil
	}
	uncount()
	gone, freed, derr := r.deleteChunks(ctx, next.ids, doomed, doomedBytes, progress)
	res.Deleted, res.Freed = gone, freed
	if derr != nil {
		return res, derr
	}
	// The mark without what was deleted, in place.
	k, d := 0, 0
	for i := range next.ids {
		if d < len(doomed) && int(doomed[d]) == i {
			d++
			continue
		}
		next.ids[k], next.times[k] = next.ids[i], next.times[i]
		k++
	}
	next.ids, next.times = next.ids[:k], next.times[:k]
	return res, r.writeMark(ctx, next)
}

// recheck runs under the lease: it reads the manifests stored since the
// scan (listed then as points) and drops from doomed the chunks they name.
// It returns why the run must not delete after all, if it must not.
func (r *Repo) recheck(ctx context.Context, epoch uint64, points []string, forgotten map[string]bool, next *gcMark, doomed, doomedBytes *[]int32) (string, error) {
	e, err := r.GetEpoch(ctx) // as the lease left it
	if err != nil {
		return "", err
	}
	if e.Epoch != epoch {
		return fmt.Sprintf("the epoch went from %d to %d during the run", epoch, e.Epoch), nil
	}
	seen := make(map[string]bool, len(points)+len(forgotten))
	for _, p := range points {
		seen[p] = true
	}
	for p := range forgotten {
		seen[p] = true
	}
	fresh, err := r.listPoints(ctx, pointsDir, seen)
	if err != nil {
		return "", err
	}
	if len(fresh) == 0 {
		return "", nil
	}
	var named idSet
	if err := r.scanAll(ctx, pointsDir, fresh, &named, nil); err != nil {
		return "", err
	}
	kd, kb := (*doomed)[:0], (*doomedBytes)[:0]
	for i, at := range *doomed {
		if !named.has(next.ids[at]) {
			kd, kb = append(kd, at), append(kb, (*doomedBytes)[i])
		}
	}
	*doomed, *doomedBytes = kd, kb
	return "", nil
}

// livePending are the pending entries of e whose writers may still write
// a manifest at now: an entry older than commitWindow plus the clock skew
// a writer may have (sweepStale - sweepMax) is a gone writer's, whose
// manifest write had to end within commitWindow of the entry (format.md,
// "Committing a restore point") and which re-checks its chunks if it ever
// renews the entry (CommitPoint), which no sweep lets it do meanwhile.
func livePending(e Epoch, now time.Time) []PendingPoint {
	var live []PendingPoint
	for _, p := range e.Pending {
		if now.Sub(p.Since) <= pendingLive {
			live = append(live, p)
		}
	}
	return live
}

// takeSweep takes the sweep lease as id, unless a commit is pending or
// another sweep holds it: then it says why in noSweep. A lease of the same
// id is a previous attempt's of this run (a worker that died mid-sweep),
// taken over once that attempt has surely stopped deleting (sweepMax after
// it took it); before that the error is transient.
func (r *Repo) takeSweep(ctx context.Context, id string) (lease *SweepLease, noSweep string, err error) {
	if id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	_, err = r.UpdateEpoch(ctx, func(e *Epoch) error {
		lease, noSweep = nil, ""
		now := time.Now()
		if live := livePending(*e, now); len(live) > 0 {
			noSweep = fmt.Sprintf("%d restore points are being committed (%s since %s)", len(live), live[0].Point, live[0].Since.Format(time.RFC3339))
			return ErrNoChange
		}
		if e.Sweep != nil && e.Sweep.ID == id {
			if until := e.Sweep.Since.Add(sweepMax + time.Minute); now.Before(until) {
				return fmt.Errorf("garbage collection at %s: a previous attempt of this run (sweep %s) took the lease at %s and may still be deleting until %s; try again then",
					r.Location(), id, e.Sweep.Since.Format(time.RFC3339), until.UTC().Format(time.RFC3339))
			}
		} else if err := r.sweeping(*e, now); err != nil {
			noSweep = fmt.Sprintf("another garbage collection is sweeping (%s, since %s; its lease expires at %s if it is not let go)",
				e.Sweep.ID, e.Sweep.Since.Format(time.RFC3339), e.Sweep.Since.Add(sweepStale).Format(time.RFC3339))
			return ErrNoChange
		}
		l := SweepLease{ID: id, Since: now.UTC()}
		e.Sweep, lease = &l, &l
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("garbage collection: take the sweep lease in epoch.json at %s: %w", r.Location(), err)
	}
	return lease, noSweep, nil
}

// letGoSweep removes lease from epoch.json, if it is still there: the same
// id taken at the same time (a later attempt's re-take is not ours).
func (r *Repo) letGoSweep(ctx context.Context, lease SweepLease) error {
	_, err := r.UpdateEpoch(ctx, func(e *Epoch) error {
		if e.Sweep == nil || e.Sweep.ID != lease.ID || !e.Sweep.Since.Equal(lease.Since) {
			return ErrNoChange
		}
		e.Sweep = nil
		return nil
	})
	if err != nil {
		return fmt.Errorf("garbage collection: let go of the sweep lease in epoch.json at %s (commits wait until it is %s old): %w", r.Location(), sweepStale, err)
	}
	return nil
}

// deleteChunks deletes the chunks ids[at[i]], of sizes[i] bytes.
func (r *Repo) deleteChunks(ctx context.Context, ids []ID, at []int32, sizes []int32, progress func(string, int64)) (int, int64, error) {
	return deleteEach(ctx, len(at),
		func(i int) (int64, error) {
			id := ids[at[i]]
			if err := r.st.Delete(ctx, r.key(ChunkKey(id))); err != nil {
				return 0, fmt.Errorf("garbage collection: delete chunk %s at %s: %w", id, r.where(ChunkKey(id)), err)
			}
			return int64(sizes[i]), nil
		},
		func(n int) {
			if n%1000 == 0 {
				progress("deleted", int64(n))
			}
		},
		func(n int, err error) error {
			return fmt.Errorf("garbage collection at %s: deleting stopped after %d of %d chunks: %w", r.Location(), n, len(at), err)
		})
}

func cmpID(a, b ID) int { return bytes.Compare(a[:], b[:]) }

// idKey is the first 16 bytes of a chunk id: what idSet keeps. Two chunks
// whose ids share them (a chance of 2^-128 a pair) are both taken for
// named, which only keeps a garbage chunk: never the other way round.
type idKey [16]byte

func cmpKey(a, b idKey) int { return bytes.Compare(a[:], b[:]) }

// idSet is a set of chunk ids kept as a sorted slice of idKeys, 16 bytes
// an id; adds are buffered and merged in, in place, when the buffer
// reaches a quarter of the set: its memory is about 1.25 times the ids it
// holds.
type idSet struct {
	ids []idKey // sorted, distinct
	buf []idKey
	// parts are the entry parts (format v3) whose entries were scanned
	// already: points that share a part name the same chunks in it.
	parts map[ID]struct{}
}

func (s *idSet) add(id ID) {
	s.buf = append(s.buf, idKey(id[:16]))
	if len(s.buf) >= max(len(s.ids)/4, 1<<16) {
		s.compact()
	}
}

func (s *idSet) compact() {
	if len(s.buf) == 0 {
		return
	}
	slices.SortFunc(s.buf, cmpKey)
	s.buf = slices.Compact(s.buf)
	n, m := len(s.ids), len(s.buf)
	if cap(s.ids) < n+m {
		grown := make([]idKey, n, n+m+(n+m)/8)
		copy(grown, s.ids)
		s.ids = grown
	}
	s.ids = s.ids[:n+m]
	// Merge from the back, so that nothing unread is overwritten; an id in
	// both comes out twice, side by side, and Compact drops one.
	i, j, k := n-1, m-1, n+m-1
	for j >= 0 {
		if i >= 0 && cmpKey(s.ids[i], s.buf[j]) > 0 {
			s.ids[k] = s.ids[i]
			i--
		} else {
			s.ids[k] = s.buf[j]
			j--
		}
		k--
	}
	s.ids = slices.Compact(s.ids)
	s.buf = s.buf[:0]
}

func (s *idSet) has(id ID) bool {
	_, ok := slices.BinarySearchFunc(s.ids, idKey(id[:16]), cmpKey)
	return ok
}

// gcMark is gc/mark: the unnamed chunks a run found, each with when it was
// first found unnamed, under one epoch; sorted by id.
type gcMark struct {
	Epoch uint64
	ids   []ID
	times []int64 // Unix milliseconds
}

func (m *gcMark) since(id ID) (time.Time, bool) {
	if m == nil {
		return time.Time{}, false
	}
	i, ok := slices.BinarySearchFunc(m.ids, id, cmpID)
	if !ok {
		return time.Time{}, false
	}
	return time.UnixMilli(m.times[i]).UTC(), true
}

type gcMarkHeader struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Plan    string    `json:"plan"`
	Epoch   uint64    `json:"epoch"`
	Written time.Time `json:"written"`
	Count   int       `json:"count"`
}

func (r *Repo) markAD() []byte { return []byte("gc-mark:" + r.plan) }

// writeMark stores m as gc/mark: a JSON header line, then 40 bytes a
// chunk, zstd-compressed as a stream and sealed like a staging object, so
// that only the sealed body is ever held whole.
func (r *Repo) writeMark(ctx context.Context, m *gcMark) error {
	if !slices.IsSortedFunc(m.ids, cmpID) {
		return fmt.Errorf("garbage collection at %s: the store listed chunks out of order; nothing deleted", r.Location())
	}
	h, err := json.Marshal(gcMarkHeader{Format: gcMarkFormat, Version: FormatVersion, Plan: r.plan, Epoch: m.Epoch, Written: time.Now().UTC(), Count: len(m.ids)})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.Grow(nonceSize + len(h) + 1 + len(m.ids)*(markRecord+1) + 1024)
	if r.aead != nil {
		buf.Write(make([]byte, nonceSize))
	}
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(zw, 64<<10)
	bw.Write(h)
	bw.WriteByte('\n')
	var rec [markRecord]byte
	for i, id := range m.ids {
		copy(rec[:32], id[:])
		binary.BigEndian.PutUint64(rec[32:], uint64(m.times[i]))
		bw.Write(rec[:])
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	body := buf.Bytes()
	if r.aead != nil {
		nonce := body[:nonceSize]
		if _, err := rand.Read(nonce); err != nil {
			return err
		}
		body = r.aead.Seal(body[:nonceSize], nonce, body[nonceSize:], r.markAD())
	}
	if err := r.put(ctx, gcMarkKey, body); err != nil {
		return fmt.Errorf("garbage collection: write %s: %w", r.where(gcMarkKey), err)
	}
	return nil
}

// readMark reads gc/mark; nil when there is none. One that does not open
// is permanent with reason Corrupt (delete it: the next run marks anew).
func (r *Repo) readMark(ctx context.Context) (*gcMark, error) {
	m, err := r.readMarkStream(ctx)
	if errors.Is(err, drivers.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, classify(fmt.Errorf("garbage collection mark %s: %w (deleting it is safe: the next run marks anew)", r.where(gcMarkKey), err))
	}
	return m, nil
}

func (r *Repo) readMarkStream(ctx context.Context) (*gcMark, error) {
	var z io.Reader
	if r.aead != nil {
		body, err := r.get(ctx, gcMarkKey, MaxMetadataSize)
		if err != nil {
			return nil, err
		}
		if len(body) < nonceSize+r.aead.Overhead() {
			return nil, errCorrupt{"too short to be sealed (corrupted)"}
		}
		plainZ, err := r.aead.Open(body[nonceSize:nonceSize], body[:nonceSize], body[nonceSize:], r.markAD())
		if err != nil {
			return nil, errCorrupt{"cannot be decrypted: wrong key or corrupted"}
		}
		z = bytes.NewReader(plainZ)
	} else {
		rc, err := r.st.Get(ctx, r.key(gcMarkKey))
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		z = rc
	}
	dec, err := zstd.NewReader(z, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	br := bufio.NewReaderSize(dec, 64<<10)
	line, err := br.ReadSlice('\n')
	var h gcMarkHeader
	if err != nil || json.Unmarshal(line, &h) != nil || h.Format != gcMarkFormat || h.Plan != r.plan || h.Count < 0 || h.Count > MaxMetadataSize/markRecord {
		return nil, errCorrupt{fmt.Sprintf("not a mark of plan %q (corrupted)", r.plan)}
	}
	m := &gcMark{Epoch: h.Epoch, ids: make([]ID, h.Count), times: make([]int64, h.Count)}
	var rec [markRecord]byte
	for i := range m.ids {
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			return nil, errCorrupt{fmt.Sprintf("%d of %d records: %v (corrupted)", i, h.Count, err)}
		}
		copy(m.ids[i][:], rec[:32])
		m.times[i] = int64(binary.BigEndian.Uint64(rec[32:]))
	}
	if n, _ := br.Read(rec[:1]); n != 0 {
		return nil, errCorrupt{"data after the last record (corrupted)"}
	}
	if !slices.IsSortedFunc(m.ids, cmpID) {
		return nil, errCorrupt{"its ids are not sorted (corrupted)"}
	}
	return m, nil
}

// scanRefs calls add for every chunk id the manifest of point stored at
// key names, streaming it: only the sealed body of an encrypted manifest is
// held whole (AES-GCM opens only a whole message). The manifest's header,
// digest and trailer are checked; an error means its ids may be incomplete.
func (r *Repo) scanRefs(ctx context.Context, key, point string, add func(ID)) error {
	_, err := r.scanObject(ctx, key, point, add)
	return err
}

// scanPoint adds to set every chunk id the manifest of point stored at
// key names: those of its point object (scanRefs), and for a v3 point those
// its entry parts name, reading only the parts set has not seen.
func (r *Repo) scanPoint(ctx context.Context, key, point string, set *idSet) error {
	version, err := r.scanObject(ctx, key, point, set.add)
	if err != nil || version != ManifestVersionChunked {
		return err
	}
	p, err := r.pointAt(ctx, key, point)
	if err != nil {
		return err
	}
	if set.parts == nil {
		set.parts = map[ID]struct{}{}
	}
	if err := p.scanParts(ctx, set.parts, set.add); err != nil {
		// Never a not-found error, which scanAll takes for a manifest
		// deleted since the listing and skips: a point whose entries
		// cannot be read would have its chunks taken for unnamed.
		return fmt.Errorf("restore point %s names chunks in entries that cannot be read (%v); nothing can be deleted until the point is repaired "+
			"(`drorch check` names what is missing) or forgotten", point, err)
	}
	return nil
}

// scanObject is scanRefs, which also returns the manifest's version.
func (r *Repo) scanObject(ctx context.Context, key, point string, add func(ID)) (version int, err error) {
	fail := func(err error) (int, error) {
		return 0, classify(fmt.Errorf("manifest of restore point %s at %s: %w", point, r.where(key), err))
	}
	if err := codecs(); err != nil {
		return 0, err
	}
	var z io.Reader
	if r.aead != nil {
		body, err := r.get(ctx, key, MaxMetadataSize+1<<20)
		if err != nil {
			return fail(err)
		}
		if len(body) < nonceSize+r.aead.Overhead() {
			return fail(errCorrupt{"too short to be sealed (corrupted)"})
		}
		plainZ, err := r.aead.Open(body[nonceSize:nonceSize], body[:nonceSize], body[nonceSize:], []byte("manifest:"+point))
		if err != nil {
			return fail(errCorrupt{"cannot be decrypted: wrong key or corrupted"})
		}
		z = bytes.NewReader(plainZ)
	} else {
		rc, err := r.st.Get(ctx, r.key(key))
		if err != nil {
			return fail(err)
		}
		defer rc.Close()
		z = bufio.NewReaderSize(rc, 1<<20)
	}
	dec, err := zstd.NewReader(z, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(MaxMetadataSize), zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return fail(err)
	}
	defer dec.Close()
	if version, err = scanManifest(io.LimitReader(dec, MaxMetadataSize+1), r.plan, point, add); err != nil {
		return fail(err)
	}
	return version, nil
}

// scanManifest reads the JSON lines of a manifest as a byte stream and
// calls add for the value of every "id" member: in formats v1 and v2 only chunk
// references have one. A small lexer keeps track of strings, so that a
// path that spells "id" is not taken for one. The header must name point
// of plan, and the digest in the trailer must match the lines before it:
// then the manifest is the one its writer checked, and the ids are all of
// its chunks. Memory stays the same whatever the size of the manifest.
func scanManifest(rd io.Reader, plan, point string, add func(ID)) (version int, err error) {
	const keepLine = 64 << 10 // the header and the trailer are far shorter
	var (
		h              = sha256.New()
		prev, last     []byte // hash states at the last two newlines
		line           []byte // the current line, while it is short
		lineLong       bool
		lines          int
		header         headerLine
		lastLine       []byte
		inStr, esc     bool
		strEsc         bool   // the current string has an escape
		suspect        bool   // the string just closed must not be a key
		str            []byte // the current string, while it is short
		strLong        bool
		afterID, value int // 1: after the string "id"; 2: after its colon
		buf            = make([]byte, 256<<10)
	)
	bad := func(format string, args ...any) (int, error) { return 0, errCorrupt{fmt.Sprintf(format, args...)} }
	for {
		n, rerr := rd.Read(buf)
		b := buf[:n]
		fed := 0 // b[:fed] is hashed
		for i, c := range b {
			if !lineLong {
				if len(line) < keepLine {
					line = append(line, c)
				} else {
					lineLong = true
				}
			}
			if inStr {
				switch {
				case esc:
					esc = false
				case c == '\\':
					esc, strEsc = true, true
				case c == '"':
					inStr = false
					// A key that encoding/json would take for "id" and
					// this lexer not: refused below if it is a key.
					suspect = strEsc || (!strLong && string(str) != "id" && strings.EqualFold(string(str), "id"))
					switch {
					case value == 2:
						id, err := ParseID(string(str))
						if err != nil || strLong {
							return bad("line %d: chunk id %q: %v (corrupted)", lines+1, str, err)
						}
						add(id)
						value = 0
					case !strLong && string(str) == "id":
						afterID = 1
					}
					continue
				}
				if !strLong {
					if len(str) < 128 {
						str = append(str, c)
					} else {
						strLong = true
					}
				}
				continue
			}
			switch c {
			case '"':
				inStr, str, strLong, strEsc, suspect = true, str[:0], false, false, false
				if afterID == 2 {
					value = 2
				}
				afterID = 0
				continue
			case ' ', '\t', '\r':
				continue
			case ':':
				if suspect {
					return bad("line %d: a key with an escape or spelled %q: not written by drorch, and its chunk ids could be missed (corrupted)", lines+1, str)
				}
				if afterID == 1 {
					afterID = 2
					continue
				}
			case '\n':
				if lines == 0 {
					if lineLong || decodeLine(line[:len(line)-1], &header) != nil {
						return bad("header: not a manifest header line (corrupted)")
					}
				}
				lines++
				// The hash state after this newline.
				h.Write(b[fed : i+1])
				fed = i + 1
				st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
				if err != nil {
					return 0, err
				}
				prev, last = last, st
				if !lineLong {
					lastLine = append(lastLine[:0], line...)
				} else {
					lastLine = lastLine[:0]
				}
				line, lineLong = line[:0], false
			}
			afterID, value, suspect = 0, 0, false
		}
		h.Write(b[fed:])
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, rerr
		}
	}
	if header.Format != ManifestFormat || header.Plan != plan || header.Point != point {
		return bad("header names %s %q of plan %q, not point %s (corrupted)", header.Format, header.Point, header.Plan, point)
	}
	if len(line) > 0 || lineLong || lines < 3 || len(lastLine) == 0 {
		return bad("missing trailer (truncated?)")
	}
	var t trailerLine
	if err := decodeLine(lastLine[:len(lastLine)-1], &t); err != nil || t.Digest == nil || t.Totals == nil {
		return bad("missing trailer (truncated?)")
	}
	sum := sha256.New()
	if err := sum.(encoding.BinaryUnmarshaler).UnmarshalBinary(prev); err != nil {
		return 0, err
	}
	if want := digestPrefix + hex.EncodeToString(sum.Sum(nil)); *t.Digest != want {
		return bad("digest %q does not match the content, whose digest is %s (corrupted)", *t.Digest, want)
	}
	return header.Version, nil
}
