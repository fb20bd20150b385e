package repo

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

const (
	pointsDir   = "points/"
	manifestExt = ".json.zst"
	// pointTime is RFC 3339 with exactly three fractional digits, so that
	// ids sort in time order as strings even for points a second apart.
	pointTime    = "2006-01-02T15:04:05.000Z07:00"
	pointTimeLen = len("2006-01-02T15:04:05.000Z")
	maxSuffixLen = 32
)

// NewPointID returns the id of a restore point taken at t:
// t in UTC to the millisecond (RFC 3339 with three fractional digits) + "-" +
// suffix, e.g. "2026-11-22T10:01:50.123Z-3f2a9c1b".
// suffix must be 1 to 32 of [a-z0-9] (ValidPointID checks the result). Ids
// sort in time order as strings.
func NewPointID(t time.Time, suffix string) string {
	return t.UTC().Format(pointTime) + "-" + suffix
}

// ValidPointID checks that s is a point id as NewPointID makes them.
func ValidPointID(s string) error {
	_, err := PointTime(s)
	return err
}

// PointTime returns the time in the point id s, to the millisecond.
func PointTime(s string) (time.Time, error) {
	bad := func() (time.Time, error) {
		return time.Time{}, fmt.Errorf(`point id %q must be a UTC time, "-" and 1 to %d of [a-z0-9], as in 2026-11-22T10:01:50.123Z-3f2a9c1b`, s, maxSuffixLen)
	}
	if len(s) < pointTimeLen+2 || len(s) > pointTimeLen+1+maxSuffixLen || s[pointTimeLen] != '-' {
		return bad()
	}
	for _, c := range []byte(s[pointTimeLen+1:]) {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return bad()
		}
	}
	t, err := time.Parse(pointTime, s[:pointTimeLen])
	if err != nil || t.UTC().Format(pointTime) != s[:pointTimeLen] {
		return bad()
	}
	return t.UTC(), nil
}

func manifestKey(point string) string { return pointsDir + point + manifestExt }

// NewManifest returns a manifest for a point of r's plan with the fields that
// format v1 and r fix already set; the caller adds Entries and calls
// ComputeTotals.
func (r *Repo) NewManifest(point, site, sourceKind string, snapshot time.Time, epoch uint64) *Manifest {
	return &Manifest{
		Version:     FormatVersion,
		Plan:        r.plan,
		Point:       point,
		Site:        site,
		Source:      sourceKind,
		Snapshot:    snapshot.UTC(),
		Epoch:       epoch,
		Chunker:     ChunkerSpec,
		Compression: CompressionZstd,
		Encryption:  r.Encryption(),
	}
}

// PutManifest commits m as a restore point with nothing to check first:
// CommitPoint(ctx, m, nil). It never replaces a stored manifest, and is
// idempotent.
func (r *Repo) PutManifest(ctx context.Context, m *Manifest) error {
	return r.CommitPoint(ctx, m, nil)
}

// GetManifest reads and checks the manifest of a valid restore point. An
// absent one, one being committed, or one abandoned (docs/format.md,
// "Committing a restore point") wraps drivers.ErrNotFound, permanent for an
// abandoned one; one that cannot be opened or decoded, or that names another
// point or plan, is permanent with reason Corrupt. It holds every entry:
// for points known to be small; OpenPoint pages them in.
func (r *Repo) GetManifest(ctx context.Context, point string) (*Manifest, error) {
	p, err := r.OpenPoint(ctx, point)
	if err != nil {
		return nil, err
	}
	return p.Manifest(ctx)
}

// HasManifest reports whether point is a valid restore point, without
// reading its manifest: stored, and neither pending nor abandoned.
func (r *Repo) HasManifest(ctx context.Context, point string) (bool, error) {
	if err := ValidPointID(point); err != nil {
		return false, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	began := time.Now()
	has, err := r.storedManifest(ctx, point)
	if err != nil || !has {
		return false, err
	}
	e, err := r.validAt(ctx, began)
	if err != nil {
		return false, err
	}
	return r.invalid(e, point) == nil, nil
}

// PointInfo describes a stored manifest.
type PointInfo struct {
	ID   string
	Time time.Time // from the id, to the second
	Size int64     // stored size of the manifest
}

// Points lists the valid restore points, oldest first: the stored
// manifests, in one listing, less the points epoch.json lists as pending or
// abandoned. Keys under points/ that are not manifests of well-formed point
// ids are ignored.
func (r *Repo) Points(ctx context.Context) ([]PointInfo, error) {
	began := time.Now()
	prefix := r.key(pointsDir)
	var out []PointInfo
	err := r.list(ctx, prefix, func(o store.Object) error {
		rel, ok := strings.CutPrefix(o.Key, prefix)
		if !ok {
			return nil
		}
		id, ok := strings.CutSuffix(rel, manifestExt)
		if !ok {
			return nil
		}
		t, err := PointTime(id)
		if err != nil {
			return nil
		}
		out = append(out, PointInfo{ID: id, Time: t, Size: o.Size})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list restore points at %s: %w", r.where(pointsDir), err)
	}
	// epoch.json after the listing, as in GetManifest.
	e, err := r.validAt(ctx, began)
	if err != nil {
		return nil, err
	}
	out = slices.DeleteFunc(out, func(p PointInfo) bool { return r.invalid(e, p.ID) != nil })
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Time.Equal(out[j].Time) {
			return out[i].Time.Before(out[j].Time)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}
