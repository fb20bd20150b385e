package activities

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// WALInfo is how a plan's WAL is shipped to its standbys (config wal:).
type WALInfo struct {
	Ship      bool          `json:"ship,omitempty"`
	ShipEvery time.Duration `json:"shipEvery,omitempty"`
	MaxFiles  int           `json:"maxFiles,omitempty"`
}

func walInfo(p *config.Plan) WALInfo {
	return WALInfo{Ship: p.ShipsWAL(), ShipEvery: p.WAL.ShipEvery, MaxFiles: p.WAL.MaxFiles}
}

// CopyWALInput asks for one shipping round from the active site From to
// standby To. Epoch is the plan's epoch as the workflow read it with the
// roles: a round at a site whose epoch moved on ships nothing.
type CopyWALInput struct {
	Plan  string `json:"plan"`
	From  string `json:"from"`
	To    string `json:"to"`
	Epoch uint64 `json:"epoch"`
	// After is the last file shipped to To; "" lists the whole log (a
	// new run rescans once, to catch files archived out of order).
	After string `json:"after,omitempty"`
	Max   int    `json:"max"`
}

// CopyWALResult is what a round did and how far To is behind.
type CopyWALResult struct {
	Shipped int `json:"shipped"`
	// Last is the newest file of From that To holds, once the round ends
	// ("" when To holds none); LastTime when From archived it.
	Last     string    `json:"last,omitempty"`
	LastTime time.Time `json:"lastTime,omitzero"`
	// Pending counts the files of From that To still lacks; Behind is
	// when From archived the oldest of them (zero: none is missing).
	Pending int       `json:"pending"`
	Behind  time.Time `json:"behind,omitzero"`
	// RolesChanged: a site's epoch is not the one the workflow read; the
	// round shipped nothing and the roles must be read again.
	RolesChanged string    `json:"rolesChanged,omitempty"`
	Checked      time.Time `json:"checked"`
}

// CopyWAL copies the WAL files the active site's repository holds and
// standby To's lacks, oldest first, at most in.Max of them, each checked
// on the way (GetWALRaw/PutWALRaw: the stored body is copied, not decoded
// and sealed again). It runs on To's queue, like CopyChunks. A file that
// To holds with other content is a permanent Conflict naming it.
func (a *Activities) CopyWAL(ctx context.Context, in CopyWALInput) (CopyWALResult, error) {
	res, err := a.copyWAL(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) copyWAL(ctx context.Context, in CopyWALInput) (CopyWALResult, error) {
	res := CopyWALResult{Checked: time.Now()}
	src, err := a.repo(in.Plan, in.From)
	if err != nil {
		return res, err
	}
	dst, err := a.repo(in.Plan, in.To)
	if err != nil {
		return res, err
	}
	for site, r := range map[string]*repo.Repo{in.From: src, in.To: dst} {
		e, err := r.GetEpoch(ctx)
		if reason, _ := drivers.IsPermanent(err); reason == drivers.ReasonNoSuchBucket {
			continue // nothing there yet: epoch 0
		}
		if err != nil {
			return res, fmt.Errorf("site %s: %w", site, err)
		}
		if e.Epoch > in.Epoch || site == in.From && e.Epoch != in.Epoch {
			res.RolesChanged = fmt.Sprintf("site %s is at epoch %d, not %d", site, e.Epoch, in.Epoch)
			return res, nil
		}
	}
	from := walListFrom(in.After)
	// The oldest segment To holds bounds a full rescan: what sorts before
	// it, To's retention deleted (or To never needed), and copying it again
	// would only be deleted again and read as lag meanwhile.
	have, floor := map[string]bool{}, ""
	err = dst.ListWAL(ctx, from, func(f repo.WALFile) error {
		have[f.Name] = true
		if floor == "" && len(f.Name) >= 24 && !strings.HasSuffix(f.Name, ".history") {
			floor = f.Name[:24]
		}
		return nil
	})
	if reason, _ := drivers.IsPermanent(err); err != nil && reason != drivers.ReasonNoSuchBucket {
		return res, fmt.Errorf("site %s: %w", in.To, err)
	}
	var missing []repo.WALFile
	err = src.ListWAL(ctx, from, func(f repo.WALFile) error {
		if have[f.Name] {
			res.Last, res.LastTime = f.Name, f.Modified
		} else if f.Name >= floor || strings.HasSuffix(f.Name, ".history") {
			missing = append(missing, f)
		}
		return nil
	})
	if reason, _ := drivers.IsPermanent(err); err != nil && reason != drivers.ReasonNoSuchBucket {
		return res, fmt.Errorf("site %s: %w", in.From, err)
	}
	for i, f := range missing {
		if i == in.Max || ctx.Err() != nil {
			break
		}
		body, err := src.GetWALRaw(ctx, f.Name)
		if err != nil {
			return res, fmt.Errorf("ship WAL from %s to %s: %w", in.From, in.To, err)
		}
		_, err = dst.PutWALRaw(ctx, f.Name, body)
		if reason, _ := drivers.IsPermanent(err); reason == drivers.ReasonNoSuchBucket {
			// Nothing was transmitted to To yet: make its bucket, as a
			// transmit would.
			if err = dst.Store().Prepare(ctx); err == nil {
				_, err = dst.PutWALRaw(ctx, f.Name, body)
			}
		}
		if err != nil {
			return res, fmt.Errorf("ship WAL from %s to %s: %w", in.From, in.To, err)
		}
		res.Shipped++
		if f.Name > res.Last {
			res.Last, res.LastTime = f.Name, f.Modified
		}
		if activity.IsActivity(ctx) {
			activity.RecordHeartbeat(ctx, res.Shipped)
		}
	}
	res.Pending = len(missing) - res.Shipped
	if res.Pending > 0 {
		res.Behind = missing[res.Shipped].Modified
	}
	res.Checked = time.Now()
	metrics.WALChecked(in.Plan, in.To, res.Checked, res.Behind)
	return res, nil
}

// walListFrom is where a round lists from after file after: the start of
// its timeline's 4 GiB log (the first 16 hex digits), so that a backup
// history file archived after the next segment, and a log switch, are
// seen; "" lists everything.
func walListFrom(after string) string {
	if len(after) < 16 {
		return ""
	}
	return after[:16]
}
