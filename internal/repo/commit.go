package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// The commit rule (docs/format.md, "Committing a restore point") rests on
// these durations, each far apart from the next, so that no clock needs to
// agree with another closer than a few days.
const (
	// commitWindow is the longest a writer may take from reserving (or
	// renewing) its point to the end of its manifest's write, which it
	// enforces with a deadline; and the longest a reader may take from
	// starting to read a manifest to the end of reading epoch.json.
	commitWindow = time.Hour
	// staleAfter: a point pending this long is abandoned; its writer is
	// gone (a live one renews within commitWindow).
	staleAfter = 7 * 24 * time.Hour
	// keepAbandoned: an abandoned point's manifest is deleted this long
	// after it was abandoned, when no writer can still be writing it.
	keepAbandoned = 7 * 24 * time.Hour
	// forgetAfter: an abandoned entry is dropped this long after its
	// manifest was deleted, when no reader can still hold that manifest.
	forgetAfter = 24 * time.Hour
)

// A commit renews its entry when its check took longer than renewAfter,
// and checks again when it took recheckAfter or longer. Vars only so that
// tests can shorten them.
var (
	renewAfter   = commitWindow / 2
	recheckAfter = commitWindow
)

// CommitPoint makes m a valid restore point in r, never one whose commit a
// raise of the epoch overtook. m.Epoch is the epoch its writer acts under.
//
//  1. It reserves the point in epoch.json (compare-and-swap): refused with
//     "superseded" when the epoch is already past m.Epoch.
//  2. It runs check (the long part of a commit, such as checking that every
//     chunk is stored), then creates the manifest only if it is absent.
//  3. It releases the point (compare-and-swap). Only then is it valid. If a
//     raise came first, the point is abandoned: its manifest is deleted and
//     the error says "superseded by epoch N".
//
// It is idempotent: a retry that finds the point committed with the same
// manifest succeeds; a different manifest under the same point is an error.
// Refusals are permanent with reason Fenced.
//
// m's entries are written as a v3 point, sorted into tree order, their
// parts stored before step 1 and checked in step 2 after check. A point
// too big to hold in memory is written with a PointWriter instead.
func (r *Repo) CommitPoint(ctx context.Context, m *Manifest, check func(context.Context) error) error {
	w, err := r.writeManifest(ctx, m)
	if err != nil {
		return err
	}
	// check is the caller's, of the chunks m names (Needs): the entry
	// parts written just now are checked here, after the reservation too.
	return w.Commit(ctx, func(ctx context.Context) error {
		if check != nil {
			if err := check(ctx); err != nil {
				return err
			}
		}
		return r.checkParts(ctx, m.Point, w.parts)
	})
}

// writeManifest writes the entries of m as a v3 point (CompareTreePaths
// order: they are sorted first, the writer needs them so) and checks that
// its totals are m's.
func (r *Repo) writeManifest(ctx context.Context, m *Manifest) (*PointWriter, error) {
	h := *m
	h.Entries = nil
	w, err := r.NewPointWriter(ctx, &h, nil)
	if err != nil {
		return nil, err
	}
	entries := m.Entries
	if !slices.IsSortedFunc(entries, func(a, b Entry) int { return CompareTreePaths(a.Path, b.Path) }) {
		entries = slices.Clone(entries)
		slices.SortStableFunc(entries, func(a, b Entry) int { return CompareTreePaths(a.Path, b.Path) })
	}
	for i := range entries {
		if err := w.Add(ctx, &entries[i]); err != nil {
			if errors.Is(err, ErrUnsorted) { // a duplicate path, after sorting
				err = drivers.Permanent(drivers.ReasonInvalidInput, err)
			}
			return nil, err
		}
	}
	totals, err := w.Finish(ctx)
	if err != nil {
		return nil, err
	}
	if totals != m.Totals {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: totals %+v do not match the entries, which give %+v (call ComputeTotals)", m.Point, m.Totals, totals)
	}
	return w, nil
}

// commitPlain commits the point object plain of point under epoch: the
// rule CommitPoint describes.
func (r *Repo) commitPlain(ctx context.Context, point string, epoch uint64, plain []byte, check func(context.Context) error) error {
	body, err := r.seal(plain, []byte("manifest:"+point))
	if err != nil {
		return fmt.Errorf("put manifest %s: %w", point, err)
	}
	m := &Manifest{Point: point, Epoch: epoch}
	reserved, committed, err := r.reserve(ctx, m.Point, m.Epoch)
	if err != nil || committed {
		if err == nil {
			err = r.sameManifest(ctx, m.Point, plain)
		}
		return err
	}
	if check != nil {
		if err := check(ctx); err != nil {
			return r.checkFailed(ctx, m.Point, err)
		}
	}
	if waited := time.Since(reserved); waited > renewAfter {
		// The check took long: renew, so the write fits in the window.
		if reserved, committed, err = r.reserve(ctx, m.Point, m.Epoch); err != nil || committed {
			if err == nil {
				err = r.sameManifest(ctx, m.Point, plain)
			}
			return err
		}
		if waited >= recheckAfter && check != nil {
			// A sweep may have ignored our entry as a gone writer's and
			// deleted chunks since the check: check again, under the
			// renewed entry (docs/format.md, "Garbage collection").
			if err := check(ctx); err != nil {
				return r.checkFailed(ctx, m.Point, err)
			}
		}
	}
	if err := r.createManifest(ctx, reserved, m.Point, plain, body); err != nil {
		return err
	}
	return r.release(ctx, m.Point)
}

// checkFailed ends a commit whose check failed with err. A permanent
// failure abandons the point: no manifest was written, and a pending entry
// left behind would keep every garbage collection from sweeping until it is
// stale (7 days). Abandoned rather than dropped, so that an older attempt
// of the same commit still running can never make it valid. A transient
// failure keeps the entry: the retry renews it.
func (r *Repo) checkFailed(ctx context.Context, point string, err error) error {
	reason, permanent := drivers.IsPermanent(err)
	if !permanent {
		return err
	}
	if reason == ReasonMissingChunk {
		err = drivers.Permanentf(reason, "%v. Garbage collection may have removed a chunk this commit had counted on (found stored and skipped "+
			"while it was unused); run the backup again: the next one uploads it anew", err)
	}
	_, uerr := r.UpdateEpoch(ctx, func(e *Epoch) error {
		for i, p := range e.Pending {
			if p.Point == point {
				e.Pending = append(e.Pending[:i], e.Pending[i+1:]...)
				e.Abandoned = append(e.Abandoned, AbandonedPoint{Point: p.Point, Epoch: p.Epoch, By: p.Epoch, At: time.Now().UTC()})
				return nil
			}
		}
		return ErrNoChange
	})
	if uerr != nil {
		return fmt.Errorf("%w (and abandoning restore point %s in epoch.json at %s failed: %v; it is abandoned once stale)", err, point, r.Location(), uerr)
	}
	return err
}

// reserve adds point to the pending list, or renews its entry, and returns
// when it began (on this host's monotonic clock). committed reports a point
// already valid here, which it leaves alone.
func (r *Repo) reserve(ctx context.Context, point string, epoch uint64) (began time.Time, committed bool, err error) {
	began = time.Now()
	_, err = r.UpdateEpoch(ctx, func(e *Epoch) error {
		committed = false
		if a := e.abandoned(point); a != nil {
			return r.superseded(point, *e, a)
		}
		if p := e.pending(point); p != nil {
			// A renewal is a new beginning: not during a sweep, which may
			// have taken an entry this old for a gone writer's.
			if err := r.sweeping(*e, time.Now()); err != nil {
				return err
			}
			p.Since = time.Now().UTC()
			return nil
		}
		// Not listed, yet stored: committed already, by an earlier attempt.
		// (A manifest written since e was read would have changed
		// epoch.json first, and failed this update.)
		switch has, err := r.storedManifest(ctx, point); {
		case err != nil:
			return err
		case has:
			committed = true
			return ErrNoChange
		}
		if e.Epoch > epoch {
			return r.superseded(point, *e, nil)
		}
		if err := r.sweeping(*e, time.Now()); err != nil {
			return err
		}
		e.Pending = append(e.Pending, PendingPoint{Point: point, Epoch: epoch, Since: time.Now().UTC()})
		// Fence out drorch older than v3 before any v3 point exists here
		// (Epoch.Format).
		e.Format = max(e.Format, ManifestVersionChunked)
		return nil
	})
	return began, committed, err
}

// release removes point from the pending list: the moment it becomes valid.
// If it was abandoned meanwhile, its manifest is deleted and the error says
// by which epoch.
func (r *Repo) release(ctx context.Context, point string) error {
	var gone *AbandonedPoint
	listed := false
	e, err := r.UpdateEpoch(ctx, func(e *Epoch) error {
		gone, listed = nil, false
		if a := e.abandoned(point); a != nil {
			gone = a
			return ErrNoChange
		}
		for i, p := range e.Pending {
			if p.Point == point {
				e.Pending = append(e.Pending[:i], e.Pending[i+1:]...)
				listed = true
				return nil
			}
		}
		return ErrNoChange // another attempt of this commit released it
	})
	if err != nil {
		return fmt.Errorf("commit restore point %s at %s: %w", point, r.Location(), err)
	}
	if gone == nil && !listed {
		// Released by another attempt, unless this one stalled for days
		// and the point was abandoned, deleted and forgotten meanwhile.
		switch has, err := r.storedManifest(ctx, point); {
		case err != nil:
			return fmt.Errorf("commit restore point %s: %w", point, err)
		case !has:
			return drivers.Permanentf(drivers.ReasonFenced,
				"commit restore point %s at %s: its manifest is gone: the commit stalled until the point was abandoned and deleted; take a new backup", point, r.Location())
		}
	}
	if gone != nil {
		// Readers ignore it anyway; deleting it saves a hand-recovery
		// reader from taking it for a restore point.
		if err := r.retireManifest(ctx, point); err != nil {
			return fmt.Errorf("%w (and deleting its manifest failed: %v)", r.superseded(point, e, gone), err)
		}
		return r.superseded(point, e, gone)
	}
	return nil
}

// superseded is the error of a writer whose epoch e overtook; a is its
// point's abandoned entry, nil when it was refused before it began.
func (r *Repo) superseded(point string, e Epoch, a *AbandonedPoint) error {
	by := e.Epoch
	when := "before its commit began"
	if a != nil {
		by, when = a.By, "during its commit under epoch "+fmt.Sprint(a.Epoch)
		if a.By == a.Epoch {
			return drivers.Permanentf(drivers.ReasonFenced, "restore point %s at %s: abandoned: its commit failed its check or did not finish within %d days; it is not a valid restore point: take a new backup",
				point, r.Location(), staleAfter/(24*time.Hour))
		}
	}
	return drivers.Permanentf(drivers.ReasonFenced, "restore point %s at %s: superseded by epoch %d (now %d, set by site %s: %s) %s; it is not a valid restore point: take a new backup at the active site",
		point, r.Location(), by, e.Epoch, e.Site, e.Reason, when)
}

// createManifest writes the sealed manifest if none is there. Finding the
// same manifest there is success (an earlier attempt wrote it); a different
// one is a permanent error. The write must end within commitWindow of the
// reservation made at reserved.
func (r *Repo) createManifest(ctx context.Context, reserved time.Time, point string, plain, body []byte) error {
	key := manifestKey(point)
	wctx, cancel := context.WithDeadline(ctx, reserved.Add(commitWindow))
	defer cancel()
	_, err := r.st.PutIf(wctx, r.key(key), bytes.NewReader(body), int64(len(body)), store.IfAbsent())
	if drivers.IsPreconditionFailed(err) {
		return r.sameManifest(ctx, point, plain)
	}
	if err != nil {
		return fmt.Errorf("put manifest %s at %s: %w", point, r.where(key), err)
	}
	return nil
}

// sameManifest checks that the stored manifest of point is the one whose
// encoding is plain.
func (r *Repo) sameManifest(ctx context.Context, point string, plain []byte) error {
	have, err := r.openPoint(ctx, point)
	if err != nil {
		return err
	}
	if !bytes.Equal(have.plain, plain) {
		return drivers.Permanentf(drivers.ReasonInvalidInput,
			"commit restore point %s at %s: a different manifest of that point is already stored (snapshot %s, %d entries); point ids must be unique: not overwriting it",
			point, r.where(manifestKey(point)), have.Meta.Snapshot.Format(time.RFC3339), have.Meta.Totals.Entries)
	}
	return nil
}

// validAt reads epoch.json for a reader that began reading manifests at
// began, which must be within commitWindow: an abandoned entry is dropped
// forgetAfter after its manifest was deleted, so a reader this quick that
// saw the manifest also sees the entry.
func (r *Repo) validAt(ctx context.Context, began time.Time) (Epoch, error) {
	e, err := r.GetEpoch(ctx)
	if err != nil {
		return Epoch{}, err
	}
	if d := time.Since(began); d > commitWindow {
		return Epoch{}, fmt.Errorf("reading restore points at %s took %s, longer than the %s in which epoch.json must be read after them; try again",
			r.Location(), d.Round(time.Second), commitWindow)
	}
	return e, nil
}

// invalid explains why point is not a valid restore point as of e, or
// returns nil when it is (given that its manifest is stored). An abandoned
// point is permanently not found; a pending one is not found for now.
func (r *Repo) invalid(e Epoch, point string) error {
	if a := e.abandoned(point); a != nil {
		why := fmt.Sprintf("its commit under epoch %d was overtaken by epoch %d on %s", a.Epoch, a.By, a.At.Format(time.RFC3339))
		if a.By == a.Epoch {
			why = fmt.Sprintf("its commit did not finish within %d days", staleAfter/(24*time.Hour))
		}
		return drivers.Permanent(drivers.ReasonNotFound, fmt.Errorf("restore point %s at %s was abandoned (%s); it is not a valid restore point: %w",
			point, r.Location(), why, drivers.ErrNotFound))
	}
	if p := e.pending(point); p != nil {
		return fmt.Errorf("restore point %s at %s is being committed (since %s) and is not valid yet: %w",
			point, r.Location(), p.Since.Format(time.RFC3339), drivers.ErrNotFound)
	}
	return nil
}

// deleteAgedManifests deletes the manifests of points abandoned longer
// than keepAbandoned and not yet marked deleted, and returns them, for
// UpdateEpoch to mark (see pruneEpoch).
func (r *Repo) deleteAgedManifests(ctx context.Context, e Epoch) (map[string]bool, error) {
	var deleted map[string]bool
	now := time.Now()
	for _, a := range e.Abandoned {
		if a.Deleted.IsZero() && now.Sub(a.At) > keepAbandoned {
			if err := r.retireManifest(ctx, a.Point); err != nil {
				return nil, fmt.Errorf("delete the manifest of abandoned restore point %s at %s: %w", a.Point, r.Location(), err)
			}
			if deleted == nil {
				deleted = map[string]bool{}
			}
			deleted[a.Point] = true
		}
	}
	return deleted, nil
}

// pruneEpoch keeps the lists bounded: a point pending longer than
// staleAfter is abandoned; an abandoned point whose manifest
// deleteAgedManifests deleted before this write was computed is marked
// deleted; one marked deleted longer than forgetAfter ago is dropped.
func pruneEpoch(e *Epoch, now time.Time, deleted map[string]bool) {
	kept := e.Pending[:0]
	for _, p := range e.Pending {
		if now.Sub(p.Since) > staleAfter {
			e.Abandoned = append(e.Abandoned, AbandonedPoint{Point: p.Point, Epoch: p.Epoch, By: p.Epoch, At: now})
			continue
		}
		kept = append(kept, p)
	}
	e.Pending = kept
	if len(e.Pending) == 0 {
		e.Pending = nil
	}
	ab := e.Abandoned[:0]
	for _, a := range e.Abandoned {
		switch {
		case a.Deleted.IsZero() && deleted[a.Point]:
			a.Deleted = now
		case !a.Deleted.IsZero() && now.Sub(a.Deleted) > forgetAfter:
			continue
		}
		ab = append(ab, a)
	}
	e.Abandoned = ab
	if len(e.Abandoned) == 0 {
		e.Abandoned = nil
	}
}

// storedManifest reports whether the manifest of point is stored, valid or not.
func (r *Repo) storedManifest(ctx context.Context, point string) (bool, error) {
	key := manifestKey(point)
	if _, err := r.st.Stat(ctx, r.key(key)); err != nil {
		if errors.Is(err, drivers.ErrNotFound) {
			return false, nil
		}
		return false, fmt.Errorf("stat manifest %s at %s: %w", point, r.where(key), err)
	}
	return true, nil
}
