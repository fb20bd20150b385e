package repo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drorch/drorch/drivers"
)

// WAL retention (docs/format.md, "WAL retention") deletes the WAL files no
// stored PostgreSQL base backup needs, under the safety rules of the chunk
// sweep: a file stored less than GCMargin ago is kept, nothing is deleted
// while a commit is pending, and deleting happens under the sweep lease in
// epoch.json, after the manifests stored meanwhile were read.

// SourcePostgres is the source kind (Manifest.Source) of a postgres plan's
// restore points. A point of it with a backup_label at its root is a base
// backup and needs the WAL from its start on; one without (a logical dump)
// needs no WAL.
const SourcePostgres = "postgres"

// WALOptions tune CollectWAL.
type WALOptions struct {
	// DryRun changes nothing: the result says what a run would delete now.
	DryRun bool
	// NoSweep, when set, says why the run must delete nothing (a restore
	// may be reading WAL).
	NoSweep string
	// Forgotten are points whose manifests count as deleted (for DryRun).
	Forgotten map[string]bool
	// SweepID identifies the run's sweep lease, as GCOptions.SweepID.
	SweepID string
}

// WALResult is what WAL retention found and did.
type WALResult struct {
	Files int   `json:"files"` // WAL files stored (segments, partial, backup and history files)
	Bytes int64 `json:"bytes"`
	// Bases is how many stored base backups need WAL. KeptFrom is the first
	// WAL file of the oldest of them (KeptFromPoint): the point-in-time
	// recovery window reaches back to it. None: every WAL file is kept.
	Bases         int    `json:"bases"`
	KeptFrom      string `json:"keptFrom,omitempty"`
	KeptFromPoint string `json:"keptFromPoint,omitempty"`
	// Deleted files (a dry run: that would be), Freed bytes, and the first
	// and last of them in name order.
	Deleted int    `json:"deleted"`
	Freed   int64  `json:"freed"`
	First   string `json:"first,omitempty"`
	Last    string `json:"last,omitempty"`
	// Young files no base backup needs but stored less than GCMargin ago:
	// kept until a later run.
	Young         int     `json:"young"`
	YoungBytes    int64   `json:"youngBytes"`
	MarginSeconds float64 `json:"marginSeconds"`
	Swept         bool    `json:"swept"` // the run held the sweep lease
	// NoSweep says why the run deleted nothing it could have, when it did not.
	NoSweep string `json:"noSweep,omitempty"`
}

// walStart is where a base backup's WAL begins: its first file's timeline
// and position (log and segment, 16 hex digits, which sort as numbers).
type walStart struct {
	tli, pos string
	name     string
	point    string
}

// needs reports whether a base backup starting at s may replay the WAL
// file name: a file of its timeline or a later one at or after its start
// position. Recovery follows a backup's timeline and the ones branching
// from it, whose ids are higher; a file of an older timeline, or one
// before the start, it never reads.
func (s walStart) needs(name string) bool {
	return name[:8] >= s.tli && name[8:24] >= s.pos
}

// walNeeded reports whether the WAL file name must be kept for one of
// bases: a timeline history file always, any other file (segment,
// .partial, .backup) by the segment its name begins with.
func walNeeded(name string, bases []walStart) bool {
	if strings.HasSuffix(name, ".history") {
		return true
	}
	if len(bases) == 0 {
		return true // no base backup: keep everything rather than guess
	}
	for _, b := range bases {
		if b.needs(name) {
			return true
		}
	}
	return false
}

// CollectWAL deletes the WAL files that no stored base backup (a manifest of
// source postgres with a backup_label, valid, pending or abandoned) needs
// and that were stored at least GCMargin ago. Timeline history files are
// never deleted, and with no base backup stored nothing is. It reads the
// manifests without the lease, takes the sweep lease only to delete (none
// while a commit is pending), and then reads the manifests stored since
// first. Deleting is idempotent: a run cut short leaves files the next one
// deletes.
func (r *Repo) CollectWAL(ctx context.Context, opt WALOptions) (res WALResult, err error) {
	res = WALResult{MarginSeconds: GCMargin.Seconds(), NoSweep: opt.NoSweep}
	e, err := r.GetEpoch(ctx)
	if err != nil {
		return res, err
	}
	if opt.DryRun && res.NoSweep == "" {
		if n := len(livePending(e, time.Now())); n > 0 {
			res.NoSweep = fmt.Sprintf("%d restore points are being committed", n)
		}
	}
	// The WAL first: a repository without any (a plan of another source)
	// costs one listing, not a read of every manifest.
	var files []WALFile
	err = r.ListWAL(ctx, "", func(f WALFile) error {
		res.Files++
		res.Bytes += f.Stored
		if !strings.HasSuffix(f.Name, ".history") {
			files = append(files, f)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("WAL retention at %s stopped, nothing deleted: %w", r.Location(), err)
	}
	if len(files) == 0 {
		return res, nil
	}
	points, err := r.listPoints(ctx, pointsDir, opt.Forgotten)
	if err != nil {
		return res, err
	}
	bases, err := r.walStarts(ctx, points)
	if err != nil {
		return res, err
	}
	res.noteBases(bases)
	now := time.Now()
	var doomed []WALFile
	for _, f := range files {
		switch {
		case walNeeded(f.Name, bases):
		case f.Modified.IsZero() || now.Sub(f.Modified) < GCMargin:
			// Stored recently (or the store does not say when): a base
			// backup being taken may need it.
			res.Young++
			res.YoungBytes += f.Stored
		default:
			doomed = append(doomed, f)
		}
	}
	if res.NoSweep != "" {
		return res, nil
	}
	if opt.DryRun || len(doomed) == 0 {
		res.count(doomed)
		return res, nil
	}

	took := time.Now()
	lease, noSweep, err := r.takeSweep(ctx, opt.SweepID)
	if err != nil {
		return res, err
	}
	if lease == nil {
		res.NoSweep = noSweep
		return res, nil
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if rerr := r.letGoSweep(cctx, *lease); rerr != nil && err == nil {
			err = rerr
		}
	}()
	ctx, cancel := context.WithDeadline(ctx, took.Add(sweepMax))
	defer cancel()
	res.Swept = true
	if res.NoSweep, doomed, err = r.recheckWAL(ctx, e.Epoch, points, opt.Forgotten, doomed); err != nil || res.NoSweep != "" {
		return res, err
	}
	res.Deleted, res.Freed, err = r.deleteWAL(ctx, doomed)
	if len(doomed) > 0 {
		res.First, res.Last = doomed[0].Name, doomed[len(doomed)-1].Name
	}
	return res, err
}

// noteBases records in res the base backups and the oldest start among
// them: the smallest position, then the smallest timeline.
func (res *WALResult) noteBases(bases []walStart) {
	res.Bases = len(bases)
	oldest := -1
	for i, b := range bases {
		if oldest < 0 || b.pos < bases[oldest].pos || b.pos == bases[oldest].pos && b.tli < bases[oldest].tli {
			oldest = i
		}
	}
	if oldest >= 0 {
		res.KeptFrom, res.KeptFromPoint = bases[oldest].name, bases[oldest].point
	}
}

// count records doomed as deleted (for a dry run, or nothing to delete).
func (res *WALResult) count(doomed []WALFile) {
	res.Deleted = len(doomed)
	for _, f := range doomed {
		res.Freed += f.Stored
	}
	if len(doomed) > 0 {
		res.First, res.Last = doomed[0].Name, doomed[len(doomed)-1].Name
	}
}

// walStarts reads the start of every base backup among the stored
// manifests of points. A manifest deleted since the listing is skipped; one
// that cannot be read stops the run, as its backup's WAL cannot be told.
func (r *Repo) walStarts(ctx context.Context, points []string) ([]walStart, error) {
	var bases []walStart
	for _, p := range points {
		pt, err := r.openPoint(ctx, p)
		if drivers.IsNotFound(err) {
			continue // forgotten or abandoned and deleted since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("WAL retention at %s stopped, nothing deleted: %w", r.Location(), err)
		}
		if pt.Meta.Source != SourcePostgres {
			continue
		}
		m, err := pt.Manifest(ctx) // a base backup's entries: a database's files
		if err != nil {
			return nil, fmt.Errorf("WAL retention at %s stopped, nothing deleted: %w", r.Location(), err)
		}
		if !hasBackupLabel(m) {
			continue
		}
		name, err := r.PointStartWAL(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("WAL retention at %s stopped, nothing deleted: %w", r.Location(), err)
		}
		bases = append(bases, walStart{tli: name[:8], pos: name[8:24], name: name, point: p})
	}
	return bases, nil
}

func hasBackupLabel(m *Manifest) bool {
	for i := range m.Entries {
		if m.Entries[i].Path == BackupLabel {
			return true
		}
	}
	return false
}

// recheckWAL runs under the lease: it reads the manifests stored since the
// scan and drops from doomed the files their base backups need. It says
// why the run must not delete after all, if it must not.
func (r *Repo) recheckWAL(ctx context.Context, epoch uint64, points []string, forgotten map[string]bool, doomed []WALFile) (string, []WALFile, error) {
	e, err := r.GetEpoch(ctx)
	if err != nil {
		return "", nil, err
	}
	if e.Epoch != epoch {
		return fmt.Sprintf("the epoch went from %d to %d during the run", epoch, e.Epoch), nil, nil
	}
	seen := make(map[string]bool, len(points)+len(forgotten))
	for _, p := range points {
		seen[p] = true
	}
	for p := range forgotten {
		seen[p] = true
	}
	fresh, err := r.listPoints(ctx, pointsDir, seen)
	if err != nil || len(fresh) == 0 {
		return "", doomed, err
	}
	more, err := r.walStarts(ctx, fresh)
	if err != nil {
		return "", nil, err
	}
	kept := doomed[:0]
	for _, f := range doomed {
		if !slices.ContainsFunc(more, func(b walStart) bool { return b.needs(f.Name) }) {
			kept = append(kept, f)
		}
	}
	return "", kept, nil
}

// deleteWAL deletes the files, a few at a time, and returns how many and
// how many bytes it deleted.
func (r *Repo) deleteWAL(ctx context.Context, files []WALFile) (int, int64, error) {
	return deleteEach(ctx, len(files),
		func(i int) (int64, error) {
			if err := r.DeleteWAL(ctx, files[i].Name); err != nil {
				return 0, fmt.Errorf("WAL retention: %w", err)
			}
			return files[i].Stored, nil
		},
		nil,
		func(n int, err error) error {
			return fmt.Errorf("WAL retention at %s: deleting stopped after %d of %d files: %w", r.Location(), n, len(files), err)
		})
}
