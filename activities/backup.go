package activities

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/datapath"
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
	// Heartbeats begin before the check of a finished listing's pieces.
	rep := a.startReporter(ctx, "snapshot")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	var res SnapshotResult
	if err := r.GetStaging(ctx, in.Op, snapshotName, &res); err == nil {
		// The record is written after every piece, each acknowledged by
		// the store; still, what a later step relies on is checked.
		missing, err := firstMissing(ctx, r, in.Op, res.Pieces, datapath.PieceName)
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

	res = SnapshotResult{Source: live, Snapshot: time.Now().UTC()}
	sp := datapath.Splitter{Emit: func(p datapath.Piece) error {
		if err := r.PutStaging(ctx, in.Op, datapath.PieceName(res.Pieces), p); err != nil {
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
		if err := sp.AddEntry(index, e); err != nil {
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
		err = sp.Flush()
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
type UploadResult = datapath.UploadResult

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
	// Heartbeats begin before the resumed range's check of its staging and
	// the chunk listing, which takes minutes in a repository of millions of
	// chunks (its objects count as progress).
	rep := a.startReporter(ctx, "upload")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	from, to := in.pieceRange()
	st := datapath.UploadResume{Next: from}
	if resumeDetails(ctx, &st) {
		a.log.Info().Str("plan", in.Plan).Int("piece", st.Next).Msg("resuming upload")
		// Each piece was recorded in staging (a store PUT, durable once
		// acknowledged) before it was reported; the commit reads them all,
		// so a resumed attempt checks they are there and redoes from the
		// first that is not.
		missing, err := firstMissingFrom(ctx, r, in.Op, from, st.Next, uploadedNames...)
		if err != nil {
			return UploadResult{}, err
		}
		if missing < st.Next {
			a.log.Warn().Str("plan", in.Plan).Str("op", in.Op).Int("piece", missing).Msg("a piece reported uploaded has no record in staging: uploading from it again")
			st.Next = missing
		}
	}
	setup, release, err := a.uploadSetup(ctx, r, in.Plan, in.Site, in.Op, in.Full, rep.watch)
	if err != nil {
		return UploadResult{}, err
	}
	defer release()
	known, parent := setup.known, setup.parent
	rep.Update(func(p *Progress) { p.BytesTotal = in.Bytes })
	u := datapath.NewUploader(r, known, rep)
	u.Source, u.OnChange, u.Retries, u.Slots = src, sc.OnChange, sc.Retries, a.storeSlots
	if parent != nil {
		u.SetParent(parent)
	}
	if err := u.Upload(ctx, in.Op, st.Next, to, st.Result); err != nil {
		return UploadResult{}, err
	}
	return u.Result(), nil
}

// parent returns the latest restore point in r, whose unchanged files a
// backup need not read again; nil when there is none or it cannot be read
// (the backup then reads everything, which is always correct).
//
// The point is opened, not read: its entries are paged in as the upload
// looks its files up (datapath.Uploader.SetParent).
func (a *Activities) parent(ctx context.Context, r *repo.Repo) *repo.Point {
	pts, err := r.Points(ctx)
	if err != nil || len(pts) == 0 {
		return nil
	}
	p, err := r.OpenPoint(ctx, pts[len(pts)-1].ID)
	if err != nil {
		a.log.Warn().Err(err).Str("repository", r.Location()).Msg("the latest restore point cannot be read: every file is read again")
		return nil
	}
	return p
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

// Commit writes the restore point's entries from the uploaded pieces, one at
// a time (format v3: stored as entry parts, commitStaged), checks that every
// chunk it names, its parts too, is in the repository, and writes the point
// object last, by the
// commit rule of repo.CommitPoint: a failover that raises the epoch past the
// one the backup started with, before or during the commit, makes it fail
// with "superseded" and the point never valid. Until then the restore point
// does not exist.
func (a *Activities) Commit(ctx context.Context, in CommitInput) (CommitResult, error) {
	rep := a.startReporter(ctx, "commit")
	defer rep.close()
	res, err := a.commit(rep.work, in)
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
	if p, err := r.OpenPoint(ctx, in.Point); err == nil {
		// A previous attempt committed and then lost its answer.
		return CommitResult{Point: p.Meta.Point, Totals: p.Meta.Totals}, r.DeleteStaging(ctx, in.Op)
	} else if !drivers.IsNotFound(err) {
		return CommitResult{}, err
	}
	totals, err := commitStaged(ctx, r, in)
	if errors.Is(err, repo.ErrUnsorted) {
		a.log.Debug().Err(err).Str("plan", in.Plan).Str("point", in.Point).Msg("the staged entries are not in tree order: sorting them in memory")
		totals, err = commitSorted(ctx, r, in)
	}
	if err != nil {
		return CommitResult{}, err
	}
	if err := r.DeleteStaging(ctx, in.Op); err != nil {
		a.log.Warn().Err(err).Str("op", in.Op).Msg("staging left behind")
	}
	return CommitResult{Point: in.Point, Totals: totals}, nil
}

// commitStaged writes the restore point of a backup from its staged upload
// records, one entry at a time (a tree of 10,000,000 files is never in
// memory: one staged piece, the entry being joined from its segments and
// the part being filled are), and commits it. The point object is the same
// for the same records, so a retry after a crash commits the same point or
// finds it committed. Records not in tree order (a stream of entries such
// as PostgreSQL's tar) return an error wrapping repo.ErrUnsorted, before
// anything is committed: commitSorted then writes them.
func commitStaged(ctx context.Context, r *repo.Repo, in CommitInput) (repo.Totals, error) {
	kind, err := stagedKind(ctx, r, in.Op)
	if err != nil {
		return repo.Totals{}, err
	}
	// The parts of the tree's unchanged stretches are those of the last
	// point: the ones the repository holds are not stored again. Damaged
	// ones are (UsableChunks leaves them out).
	known, err := r.UsableChunks(ctx)
	if err != nil {
		return repo.Totals{}, fmt.Errorf("commit %s: list chunks at %s: %w", in.Point, r.Location(), err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, err := r.NewPointWriter(wctx, r.NewManifest(in.Point, in.Site, kind, in.Snapshot, in.Epoch), func(id repo.ID) bool {
		_, ok := known[id]
		return ok
	})
	if err != nil {
		return repo.Totals{}, err
	}
	// An entry the writer refuses may only look wrong because the records
	// are out of order (a file before its directory): the rest is then
	// checked for order only, and a record out of order anywhere sends the
	// whole to commitSorted, which reports what is still wrong once sorted.
	var prev string
	var invalid error
	err = datapath.EachUploaded(ctx, r, in.Op, in.Pieces, func(e *repo.Entry) error {
		if prev != "" && repo.CompareTreePaths(prev, e.Path) >= 0 {
			return fmt.Errorf("%q after %q: %w", e.Path, prev, repo.ErrUnsorted)
		}
		prev = e.Path
		if invalid != nil {
			return nil
		}
		err := w.Add(ctx, e)
		// An entry the writer refused (not a failed upload of a part,
		// which ends the commit at once).
		if reason, permanent := drivers.IsPermanent(err); permanent && reason == drivers.ReasonInvalidInput && ctx.Err() == nil {
			invalid = err
			return nil
		}
		return err
	})
	if err == nil {
		err = invalid
	}
	if err != nil {
		// Stop the writer's part uploads; Finish returns once they did.
		stop()
		_, _ = w.Finish(ctx)
		if errors.Is(err, repo.ErrUnsorted) {
			return repo.Totals{}, err
		}
		return repo.Totals{}, fmt.Errorf("commit %s: %w", in.Point, err)
	}
	totals, err := w.Finish(ctx)
	if err != nil {
		return repo.Totals{}, err
	}
	known = nil // the check lists the chunks again, after the reservation
	// The point is reserved before the chunks are listed (seconds to
	// minutes), so that a failover landing meanwhile abandons it. The
	// parts are checked too: one found stored above may be gone since.
	err = w.Commit(ctx, func(ctx context.Context) error {
		present, err := r.Chunks(ctx)
		if err != nil {
			return err
		}
		return r.CheckPresent("commit "+in.Point, w.Needs(), present)
	})
	return totals, err
}

// commitSorted commits a backup whose staged records are not in tree order
// (a PostgreSQL tar stream): it collects every entry in memory and lets
// repo.CommitPoint sort them. That is fine for the trees such sources
// make (a database's files, thousands of entries); a file tree, whose
// snapshot is in tree order, never comes here.
func commitSorted(ctx context.Context, r *repo.Repo, in CommitInput) (repo.Totals, error) {
	m, err := assembleManifest(ctx, r, in)
	if err != nil {
		return repo.Totals{}, err
	}
	err = r.CommitPoint(ctx, m, func(ctx context.Context) error {
		present, err := r.Chunks(ctx)
		if err != nil {
			return err
		}
		return r.CheckPresent("commit "+in.Point, repo.Needs(m), present)
	})
	return m.Totals, err
}

// assembleManifest builds the manifest of a backup from its staged upload
// records, every entry in memory (commitSorted). A record that is gone (the
// staging was cleaned up or lost) is permanent: no retry brings it back,
// the backup must run again.
func assembleManifest(ctx context.Context, r *repo.Repo, in CommitInput) (*repo.Manifest, error) {
	kind, err := stagedKind(ctx, r, in.Op)
	if err != nil {
		return nil, err
	}
	m := r.NewManifest(in.Point, in.Site, kind, in.Snapshot, in.Epoch)
	if err := datapath.AddUploaded(ctx, r, in.Op, in.Pieces, m); err != nil {
		return nil, fmt.Errorf("commit %s: %w", in.Point, err)
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
