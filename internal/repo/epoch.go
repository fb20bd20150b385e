package repo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

const (
	epochKey = "epoch.json"

	// maxEpochSize bounds what a reader accepts as epoch.json.
	maxEpochSize = 1 << 20

	// maxCommitEntries bounds the pending and abandoned lists together; a
	// commit that would pass it is refused rather than let epoch.json grow.
	// Entries leave the lists on their own (see pruneEpoch): reaching it means
	// commits fail to finish on a large scale.
	maxCommitEntries = 1000

	// epochCASAttempts bounds the read, compute, compare-and-swap loop of
	// UpdateEpoch; every other writer of epoch.json is a short step, so
	// losing this many races in a row means something is wrong.
	epochCASAttempts = 12

	// epochMACLabel derives the key of epoch.json's MAC from the plan's key,
	// apart from the AES-GCM sealing of chunks, manifests and staging.
	epochMACLabel = "drorch epoch.json mac v1"

	// epochMACHead is how an authenticated epoch.json begins: the MAC is the
	// first member, on the second line, and covers every byte after its line.
	epochMACHead = "{\n  \"mac\": \"hmac-sha256:"
	epochMACTail = "\",\n"
)

// Epoch is the plan's fencing epoch at a site, kept in epoch.json as plain,
// indented JSON so that an operator can read it: it is not secret, but it is
// authenticated (a MAC) when the plan has a key. It also lists the restore
// points whose commit is under way at this site and those whose commit was
// overtaken by a raise of the epoch (docs/format.md#epochjson).
type Epoch struct {
	Epoch  uint64 `json:"epoch"`
	Site   string `json:"site"`             // the site that wrote it
	Active string `json:"active,omitempty"` // the plan's active site as of this epoch; empty: its primary
	// Primary and Secondary are the plan's roles as of this epoch once a
	// permanent failover has reversed them; empty: the configured roles.
	Primary   string    `json:"primary,omitempty"`
	Secondary string    `json:"secondary,omitempty"`
	Op        string    `json:"op,omitempty"` // the operation that set it, so a retried step does not bump twice
	Reason    string    `json:"reason,omitempty"`
	Updated   time.Time `json:"updated"`
	// Pending are the points being committed here: not valid yet.
	Pending []PendingPoint `json:"pending,omitempty"`
	// Abandoned are the points whose commit a raise of the epoch overtook
	// (or that stayed pending too long): never valid, whatever is stored.
	Abandoned []AbandonedPoint `json:"abandoned,omitempty"`
	// Sweep is set while garbage collection deletes chunks here: no
	// commit may begin meanwhile (docs/format.md, "Garbage collection").
	Sweep *SweepLease `json:"sweep,omitempty"`
	// Format is the highest manifest version a point here may have: set to
	// ManifestVersionChunked (3) by the first commit of a v3 point. A
	// drorch older than v3 refuses an epoch.json with this member, and so
	// the whole repository: its garbage collection, which reads no entry
	// parts, would take the chunks of v3 points for unnamed and delete them.
	Format int `json:"format,omitempty"`

	// Version is the ETag of the epoch.json this was read from, "" when
	// there was none: the version PutEpoch expects to replace. Not stored.
	Version string `json:"-"`
	// Unsealed is set by GetEpoch on an epoch.json without a MAC in a
	// repository with a key, accepted because an older drorch wrote it
	// and sealing has not begun there; the next write seals it. Not stored.
	Unsealed bool `json:"-"`
}

// PendingPoint is a restore point whose writer reserved it before its
// commit work and has not yet finished: its manifest may or may not exist.
type PendingPoint struct {
	Point string    `json:"point"`
	Epoch uint64    `json:"epoch"` // the epoch the writer acts under
	Since time.Time `json:"since"` // when the writer reserved it or last renewed it
}

// AbandonedPoint is a restore point that can never become valid here.
type AbandonedPoint struct {
	Point string    `json:"point"`
	Epoch uint64    `json:"epoch"` // the epoch its writer acted under
	By    uint64    `json:"by"`    // the epoch that overtook it; equal to Epoch when it went stale
	At    time.Time `json:"at"`    // when it was abandoned
	// Deleted is when its manifest was deleted, once it was kept long
	// enough that no writer can still write it; the entry goes a day later.
	Deleted time.Time `json:"deleted,omitzero"`
}

// pending returns the pending entry of point, or nil.
func (e *Epoch) pending(point string) *PendingPoint {
	for i := range e.Pending {
		if e.Pending[i].Point == point {
			return &e.Pending[i]
		}
	}
	return nil
}

// abandoned returns the abandoned entry of point, or nil.
func (e *Epoch) abandoned(point string) *AbandonedPoint {
	for i := range e.Abandoned {
		if e.Abandoned[i].Point == point {
			return &e.Abandoned[i]
		}
	}
	return nil
}

func (e Epoch) clone() Epoch {
	e.Pending = slices.Clone(e.Pending)
	e.Abandoned = slices.Clone(e.Abandoned)
	return e
}

// deriveEpochKey returns the key of epoch.json's MAC for a repository key.
func deriveEpochKey(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(epochMACLabel))
	return m.Sum(nil)
}

// epochMAC authenticates body, the bytes of epoch.json after its MAC line,
// bound to the plan so that one plan's file cannot stand for another's.
func (r *Repo) epochMAC(body []byte) []byte {
	m := hmac.New(sha256.New, r.macKey)
	m.Write([]byte("epoch:" + r.plan + "\n"))
	m.Write(body)
	return m.Sum(nil)
}

// encodeEpoch writes e as indented JSON, with the MAC as its first member
// when r has a key.
func (r *Repo) encodeEpoch(e Epoch) ([]byte, error) {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return nil, err
	}
	b = append(b, '\n')
	if r.macKey == nil {
		return b, nil
	}
	body := b[len("{\n"):]
	out := make([]byte, 0, len(epochMACHead)+64+len(epochMACTail)+len(body))
	out = append(out, epochMACHead...)
	out = hex.AppendEncode(out, r.epochMAC(body))
	out = append(out, epochMACTail...)
	return append(out, body...), nil
}

// decodeEpoch checks b's MAC against r's key and decodes it. Its errors are
// errCorrupt, each saying what an operator can do. A file without a MAC in a
// repository with a key is decoded with Unsealed set: GetEpoch decides
// whether to trust it.
func (r *Repo) decodeEpoch(b []byte) (Epoch, error) {
	doc := b
	rest, authenticated := bytes.CutPrefix(b, []byte(epochMACHead))
	if authenticated {
		if len(rest) < 64+len(epochMACTail) || !bytes.HasPrefix(rest[64:], []byte(epochMACTail)) {
			return Epoch{}, errCorrupt{"its MAC line is malformed (corrupted)"}
		}
		mac, err := hex.DecodeString(string(rest[:64]))
		if err != nil {
			return Epoch{}, errCorrupt{"its MAC line is malformed (corrupted)"}
		}
		body := rest[64+len(epochMACTail):]
		if r.macKey == nil {
			return Epoch{}, errCorrupt{fmt.Sprintf("it is authenticated with a key, but plan %q has no encryption key configured: configure the plan's key (both sites use the same one)", r.plan)}
		}
		if !hmac.Equal(mac, r.epochMAC(body)) {
			return Epoch{}, errCorrupt{fmt.Sprintf("its MAC does not match: it was changed by someone without plan %q's key, or was written with another key; "+
				"do not edit it: compare it with the other site's (drorch status) and see docs/format.md, \"epoch.json\"", r.plan)}
		}
		doc = append([]byte("{\n"), body...)
	}
	var e Epoch
	d := json.NewDecoder(bytes.NewReader(doc))
	d.DisallowUnknownFields()
	err := d.Decode(&e)
	if err == nil {
		if _, tok := d.Token(); tok != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		return Epoch{}, errCorrupt{fmt.Sprintf("%v (corrupted)", err)}
	}
	if e.Format > ManifestVersionChunked {
		return Epoch{}, fmt.Errorf("it says the repository holds format %d, which this drorch does not know (it knows up to %d): a newer drorch wrote it; upgrade this worker", e.Format, ManifestVersionChunked)
	}
	if r.macKey != nil && !authenticated {
		if len(e.Pending)+len(e.Abandoned) > 0 {
			// Only a drorch that seals epoch.json knows these lists: an
			// older one never wrote them.
			return Epoch{}, errCorrupt{fmt.Sprintf("it is not authenticated (no \"mac\") yet lists pending or abandoned points, which only a drorch that seals it writes: "+
				"it was written by someone without plan %q's key; do not edit it: compare it with the other site's (drorch status) and see docs/format.md, \"epoch.json\"", r.plan)}
		}
		e.Unsealed = true
	}
	return e, nil
}

// GetEpoch reads epoch.json, with its version (ETag) in Epoch.Version. An
// absent one is epoch 0 with an empty version and no error; one that cannot
// be decoded, or whose MAC is wrong, is permanent with reason Corrupt. In a
// repository with a key, one without a MAC is what an older drorch wrote: it
// is accepted, with Epoch.Unsealed set, as long as no seal marker exists
// there, and refused as Corrupt once one does (see PutEpoch).
func (r *Repo) GetEpoch(ctx context.Context) (Epoch, error) {
	rc, o, err := r.st.GetObject(ctx, r.key(epochKey))
	if errors.Is(err, drivers.ErrNotFound) {
		return Epoch{}, nil
	}
	if err != nil {
		return Epoch{}, fmt.Errorf("get epoch at %s: %w", r.where(epochKey), err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(rc, maxEpochSize+1))
	if err != nil {
		return Epoch{}, fmt.Errorf("get epoch at %s: %w", r.where(epochKey), err)
	}
	if n > maxEpochSize {
		return Epoch{}, drivers.Permanentf(drivers.ReasonCorrupt, "epoch at %s: larger than the %d bytes the format allows (corrupted)", r.where(epochKey), maxEpochSize)
	}
	e, err := r.decodeEpoch(buf.Bytes())
	if err != nil {
		return Epoch{}, drivers.Permanentf(drivers.ReasonCorrupt, "epoch at %s: %v", r.where(epochKey), err)
	}
	if e.Unsealed {
		since, sealed, err := r.sealedSince(ctx)
		if err != nil {
			return Epoch{}, fmt.Errorf("epoch at %s is not authenticated (no \"mac\"), and whether to trust it cannot be decided: %w", r.where(epochKey), err)
		}
		if sealed {
			return Epoch{}, drivers.Permanentf(drivers.ReasonCorrupt,
				"epoch at %s: it is not authenticated (no \"mac\"), but drorch has sealed plan %q's epoch.json here since %s (%s records it, and only a holder of the key can write it): "+
					"it was written by someone without the key after sealing began; do not edit it: compare it with the other site's (drorch status) and see docs/format.md, \"Sealing epoch.json\"",
				r.where(epochKey), r.plan, since.Format(time.RFC3339), sealMarkKey)
		}
	}
	e.Version = o.ETag
	return e, nil
}

// PutEpoch writes e as epoch.json if the stored one is still the version
// expected (an ETag from GetEpoch), or, when expected is "", if there is
// none. Another writer having come first fails it with an error wrapping
// drivers.ErrPreconditionFailed. It returns e with its new version. It does
// not check what e says: UpdateEpoch does.
//
// With a key it writes the file sealed (with its MAC), then makes sure the
// seal marker exists, from which on no unsealed epoch.json is trusted here.
// In that order, so that a crash between the two leaves a file that reads;
// the next write creates the marker. A marker that exists but does not open
// fails the write, before it is made, as Corrupt.
func (r *Repo) PutEpoch(ctx context.Context, e Epoch, expected string) (Epoch, error) {
	b, err := r.encodeEpoch(e)
	if err != nil {
		return Epoch{}, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put epoch: %w", err))
	}
	if r.macKey != nil {
		if _, _, err := r.sealedSince(ctx); err != nil {
			return Epoch{}, fmt.Errorf("put epoch at %s: %w", r.where(epochKey), err)
		}
	}
	cond := store.IfAbsent()
	if expected != "" {
		cond = store.IfMatch(expected)
	}
	etag, err := r.st.PutIf(ctx, r.key(epochKey), bytes.NewReader(b), int64(len(b)), cond)
	if err != nil {
		return Epoch{}, fmt.Errorf("put epoch at %s: %w", r.where(epochKey), err)
	}
	if r.macKey != nil {
		if err := r.markSealed(ctx); err != nil {
			return Epoch{}, err
		}
	}
	e.Version, e.Unsealed = etag, false
	return e, nil
}

// ErrNoChange, returned by an UpdateEpoch function, leaves epoch.json as it
// is; UpdateEpoch then returns the epoch read and no error.
var ErrNoChange = errors.New("no change")

// UpdateEpoch changes epoch.json by compare-and-swap: it reads it, lets fn
// change a copy, and writes that only if nobody wrote in between; if someone
// did, it reads again and calls fn again (a bounded number of times). fn must
// therefore decide from what it is given alone. Whatever fn does:
//   - the epoch never goes down;
//   - a raise moves every pending point of an older epoch to Abandoned, in
//     the same write: a commit it overtakes can never become valid;
//   - entries that have aged out are moved or dropped (see pruneEpoch).
//
// An error from fn (other than ErrNoChange) is returned as it is.
func (r *Repo) UpdateEpoch(ctx context.Context, fn func(e *Epoch) error) (Epoch, error) {
	for attempt := 1; ; attempt++ {
		cur, err := r.GetEpoch(ctx)
		if err != nil {
			return Epoch{}, err
		}
		deleted, err := r.deleteAgedManifests(ctx, cur)
		if err != nil {
			return Epoch{}, err
		}
		next := cur.clone()
		switch err := fn(&next); {
		case errors.Is(err, ErrNoChange):
			return cur, nil
		case err != nil:
			return cur, err
		}
		if next.Epoch < cur.Epoch {
			return cur, drivers.Permanentf(drivers.ReasonInvalidInput, "epoch at %s: refusing to lower epoch %d to %d", r.where(epochKey), cur.Epoch, next.Epoch)
		}
		now := time.Now().UTC()
		abandonOvertaken(&next, now)
		pruneEpoch(&next, now, deleted)
		if len(next.Pending)+len(next.Abandoned) > maxCommitEntries && len(next.Pending) > len(cur.Pending) {
			return cur, drivers.Permanentf(drivers.ReasonInvalidInput,
				"epoch at %s: %d pending and %d abandoned restore points, the most it may list is %d: commits are failing to finish; look for stuck backups and transmissions",
				r.where(epochKey), len(cur.Pending), len(cur.Abandoned), maxCommitEntries)
		}
		written, err := r.PutEpoch(ctx, next, cur.Version)
		if err == nil {
			return written, nil
		}
		if !drivers.IsPreconditionFailed(err) {
			return cur, err
		}
		if attempt == epochCASAttempts {
			return cur, fmt.Errorf("epoch at %s changed under %d attempts in a row to update it; try again: %w", r.where(epochKey), attempt, err)
		}
		// Another writer came first: wait a little (jittered, so that two
		// writers do not collide again in step) and decide anew.
		t := time.NewTimer(time.Duration(attempt) * (5*time.Millisecond + rand.N(20*time.Millisecond)))
		select {
		case <-ctx.Done():
			t.Stop()
			return cur, fmt.Errorf("update epoch at %s: %w", r.where(epochKey), ctx.Err())
		case <-t.C:
		}
	}
}

// abandonOvertaken moves the pending points of writers older than e's epoch
// to Abandoned: their commits cannot finish now.
func abandonOvertaken(e *Epoch, now time.Time) {
	kept := e.Pending[:0]
	for _, p := range e.Pending {
		if p.Epoch < e.Epoch {
			e.Abandoned = append(e.Abandoned, AbandonedPoint{Point: p.Point, Epoch: p.Epoch, By: e.Epoch, At: now})
			continue
		}
		kept = append(kept, p)
	}
	e.Pending = kept
	if len(e.Pending) == 0 {
		e.Pending = nil
	}
}

// NextEpoch returns the epoch after n, or a permanent error at the end of
// the range: an epoch never wraps around to a lower one.
func NextEpoch(n uint64) (uint64, error) {
	if n == math.MaxUint64 {
		return 0, drivers.Permanentf(drivers.ReasonInvalidInput,
			"epoch %d is the highest there is and cannot be raised: it was set by hand or forged; reset both sites' epoch.json by hand as docs/format.md describes", n)
	}
	return n + 1, nil
}
