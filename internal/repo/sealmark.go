package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// The seal marker, epoch.sealed, records that a drorch holding the plan's key
// has written epoch.json with a MAC at this site. Older versions wrote it
// without one, also in repositories with a key; such a file is accepted until
// the marker exists and refused from then on (docs/format.md, "Sealing
// epoch.json"). The marker is sealed like a staging object, so that only a
// holder of the key can write one that opens.
const (
	sealMarkKey     = "epoch.sealed"
	sealMarkFormat  = "drorch-epoch-sealed"
	maxSealMarkSize = 64 << 10
)

// sealMark is the marker's plaintext.
type sealMark struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Plan    string    `json:"plan"`
	Since   time.Time `json:"since"` // when the first sealed epoch.json was written here
}

func (r *Repo) sealMarkAD() []byte { return []byte("epoch-sealed:" + r.plan) }

// sealedSince reports whether the marker exists and, if so, since when
// epoch.json is sealed. Once found (or created) it is remembered by r and not
// read again. A marker that does not open with r's key is permanent with
// reason Corrupt: drorch then neither trusts an unsealed epoch.json nor
// writes one, whatever it says. Only for a repository with a key.
func (r *Repo) sealedSince(ctx context.Context) (time.Time, bool, error) {
	if t := r.sealed.Load(); t != nil {
		return *t, true, nil
	}
	body, err := r.get(ctx, sealMarkKey, maxSealMarkSize)
	if errors.Is(err, drivers.ErrNotFound) {
		return time.Time{}, false, nil
	}
	var m sealMark
	if err == nil {
		var plain []byte
		if plain, err = r.open(body, r.sealMarkAD(), &metaDec); err == nil {
			if jerr := json.Unmarshal(plain, &m); jerr != nil || m.Format != sealMarkFormat || m.Plan != r.plan {
				err = errCorrupt{fmt.Sprintf("it opens but is not a marker of plan %q (corrupted)", r.plan)}
			}
		}
	}
	var c errCorrupt
	if errors.As(err, &c) {
		return time.Time{}, false, drivers.Permanentf(drivers.ReasonCorrupt,
			"epoch seal marker at %s: %v. Only a holder of plan %q's key can write a valid one: check that the plan's key is the one both sites use; "+
				"if it is, the marker was written or damaged by someone without it. Delete it only after checking that epoch.json beside it has a \"mac\" line "+
				"or is the file your older drorch wrote; drorch writes a new one with the next epoch.json (docs/format.md, \"Sealing epoch.json\")",
			r.where(sealMarkKey), c.why, r.plan)
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("get epoch seal marker at %s: %w", r.where(sealMarkKey), err)
	}
	since := m.Since.UTC()
	r.sealed.Store(&since)
	return since, true, nil
}

// markSealed creates the marker if it does not exist yet; it is called after
// each sealed write of epoch.json, so that a crash between the two leaves a
// readable file (sealed, without the marker: the next write creates it).
func (r *Repo) markSealed(ctx context.Context) error {
	if r.sealed.Load() != nil {
		return nil
	}
	since := time.Now().UTC()
	plain, err := json.Marshal(sealMark{Format: sealMarkFormat, Version: FormatVersion, Plan: r.plan, Since: since})
	if err != nil {
		return err
	}
	body, err := r.seal(plain, r.sealMarkAD())
	if err != nil {
		return fmt.Errorf("seal epoch seal marker: %w", err)
	}
	_, err = r.st.PutIf(ctx, r.key(sealMarkKey), bytes.NewReader(body), int64(len(body)), store.IfAbsent())
	switch {
	case drivers.IsPreconditionFailed(err):
		// Another writer created it first: it must open, as ours would.
		// (Its error must not say "precondition failed": UpdateEpoch would
		// take that for a lost race on epoch.json and apply its change again.)
		_, found, err := r.sealedSince(ctx)
		if err == nil && !found {
			err = fmt.Errorf("epoch seal marker at %s was created by another writer and then deleted; try again", r.where(sealMarkKey))
		}
		return err
	case err != nil:
		return fmt.Errorf("epoch.json at %s is written sealed, but creating the marker %s failed (the next write of epoch.json creates it): %w",
			r.where(epochKey), r.where(sealMarkKey), err)
	}
	r.sealed.Store(&since)
	return nil
}
