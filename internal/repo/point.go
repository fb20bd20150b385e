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

// sealManifest checks m, encodes it, compresses it and seals it with the
// additional data "manifest:<point>" when r has a key. It returns the
// encoding and the body to store. An invalid manifest is a permanent
// InvalidInput error.
func (r *Repo) sealManifest(m *Manifest) (plain, body []byte, err error) {
	if m.Plan != r.plan {
		return nil, nil, drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: it is of plan %q, the repository of %q", m.Point, m.Plan, r.plan)
	}
	if m.Encryption != r.Encryption() {
		return nil, nil, drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: encryption %q, but the repository's is %q", m.Point, m.Encryption, r.Encryption())
	}
	if err := ValidPointID(m.Point); err != nil {
		return nil, nil, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest: %w", err))
	}
	plain, err = EncodeManifest(m)
	if err != nil {
		return nil, nil, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest %s: %w", m.Point, err))
	}
	if len(plain) > MaxMetadataSize {
		return nil, nil, drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: %d bytes is more than the %d the format allows", m.Point, len(plain), MaxMetadataSize)
	}
	// A restore point is valid or absent: never write a manifest that would
	// not read back. Decoding costs little next to the backup it commits.
	if _, err := DecodeManifest(plain); err != nil {
		return nil, nil, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest %s: it would not read back: %w", m.Point, err))
	}
	body, err = r.seal(plain, []byte("manifest:"+m.Point))
	if err != nil {
		return nil, nil, fmt.Errorf("put manifest %s: %w", m.Point, err)
	}
	return plain, body, nil
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
// point or plan, is permanent with reason Corrupt.
func (r *Repo) GetManifest(ctx context.Context, point string) (*Manifest, error) {
	began := time.Now()
	m, err := r.getManifest(ctx, point)
	if drivers.IsNotFound(err) {
		// Absent; say so for good when it was abandoned (and deleted).
		if e, eerr := r.GetEpoch(ctx); eerr == nil && e.abandoned(point) != nil {
			return nil, r.invalid(e, point)
		}
	}
	if err != nil {
		return nil, err
	}
	// epoch.json after the manifest: a writer reserves its point before it
	// writes the manifest, so this read sees the point listed if it is not
	// committed.
	e, err := r.validAt(ctx, began)
	if err != nil {
		return nil, err
	}
	if err := r.invalid(e, point); err != nil {
		return nil, err
	}
	return m, nil
}

// getManifest reads and checks the stored manifest of point, valid or not.
func (r *Repo) getManifest(ctx context.Context, point string) (*Manifest, error) {
	if err := ValidPointID(point); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	key := manifestKey(point)
	fail := func(err error) (*Manifest, error) {
		return nil, classify(fmt.Errorf("manifest of restore point %s at %s: %w", point, r.where(key), err))
	}
	body, err := r.get(ctx, key, MaxMetadataSize+1<<20)
	if err != nil {
		return fail(err)
	}
	plain, err := r.open(body, []byte("manifest:"+point), &metaDec)
	if err != nil {
		return fail(err)
	}
	m, err := DecodeManifest(plain)
	if err != nil {
		return fail(errCorrupt{err.Error()})
	}
	switch {
	case m.Point != point:
		return fail(errCorrupt{fmt.Sprintf("it is the manifest of point %s (copied under another name?)", m.Point)})
	case m.Plan != r.plan:
		return fail(errCorrupt{fmt.Sprintf("it is a manifest of plan %q (copied from another plan?)", m.Plan)})
	case m.Encryption != r.Encryption():
		return fail(errCorrupt{fmt.Sprintf("it says encryption %q, but the repository's is %q", m.Encryption, r.Encryption())})
	}
	return m, nil
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
	err := r.st.List(ctx, prefix, func(o store.Object) error {
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
