package activities

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// PrepareRestoreInput names a restore point and where it goes.
type PrepareRestoreInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point,omitempty"` // empty: latest at Site
	To    string `json:"to,omitempty"`    // empty: the plan's source at Site
	// At (postgres): the newest point whose base backup ended by then,
	// when Point is empty; the restore recovers the WAL up to At.
	At time.Time `json:"at,omitzero"`
}

// PrepareRestoreResult describes what will be restored where.
type PrepareRestoreResult struct {
	PointSummary
	Target    string `json:"target"`
	SiteEpoch uint64 `json:"siteEpoch"`
	// Resolved is a --to path with its symlinks resolved on the site's
	// worker: the key of its claim, so that two spellings of one directory
	// are one target.
	Resolved string `json:"resolved,omitempty"`
}

// PrepareRestore reads and verifies the manifest, checks that every chunk it
// names is in the site's repository and that the target is usable.
func (a *Activities) PrepareRestore(ctx context.Context, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	rep := a.startReporter(ctx, "prepare")
	defer rep.close()
	res, err := a.prepareRestore(rep.work, in)
	return res, temporalError(err)
}

func (a *Activities) prepareRestore(ctx context.Context, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	if sc, ok := a.execRestore(in.Plan, in.Site, in.To); ok {
		return a.prepareRestoreStream(ctx, sc, in)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	tgt, err := a.restoreTarget(in.Plan, in.Site, in.To)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	point := in.Point
	if !in.At.IsZero() && in.Point == "" {
		m, err := a.pointAt(ctx, r, in.At) // pgrestore.go: a PostgreSQL point, small
		if err != nil {
			return PrepareRestoreResult{}, err
		}
		point = m.Point
	}
	p, err := a.openPointAt(ctx, r, point)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	m := &p.Meta
	needs, err := p.Needs(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	have, err := r.Chunks(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	if err := r.CheckPresent("restore point "+m.Point, needs, have); err != nil {
		return PrepareRestoreResult{}, err
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	res := PrepareRestoreResult{PointSummary: summary(m, in.Site), Target: tgt.Describe(), SiteEpoch: ep.Epoch}
	if in.To != "" {
		res.Resolved = resolvePath(in.To)
	}
	return res, nil
}

// restoreTarget is target, refusing a path given with --to that is, holds
// or lies inside the plan's live source at site, once symlinks are resolved:
// a restore there would replace production data with an older point, which
// leaving out --to says on purpose.
func (a *Activities) restoreTarget(planName, site, to string) (source.Target, error) {
	tgt, err := a.target(planName, site, to)
	if err != nil || to == "" {
		return tgt, err
	}
	p, err := a.plan(planName)
	if err != nil {
		return nil, err
	}
	if sc, err := p.SourceAt(site); err == nil {
		if err := refuseLive("restore --to", to, sc.Path, site); err != nil {
			return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "%v; to restore into the live source on purpose, leave out --to", err)
		}
	}
	return tgt, nil
}

// refuseLive returns an error when path overlaps (is, holds or lies inside)
// the live source path at site, comparing both as written and with their
// symlinks resolved on this host.
func refuseLive(what, path, live, site string) error {
	if live == "" {
		return nil // an exec source: no tree of its own to overlap
	}
	p, l := filepath.Clean(path), filepath.Clean(live)
	rp, rl := resolvePath(p), resolvePath(l)
	var how string
	switch {
	case within(p, l) || within(rp, rl):
		how = "lies inside"
	case within(l, p) || within(rl, rp):
		how = "holds"
	default:
		return nil
	}
	resolved := ""
	if rp != p {
		resolved = " (resolving to " + rp + ")"
	}
	liveResolved := ""
	if rl != l {
		liveResolved = ", resolving to " + rl
	}
	return drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s%s %s the plan's live source at %s (%s%s): refusing to write there",
		what, p, resolved, how, site, l, liveResolved)
}

// resolvePath resolves the symlinks of an absolute path as far as it exists,
// following dangling ones by their text, and keeps the rest as written: where
// a write to path would land.
func resolvePath(path string) string {
	out := "/"
	comps := strings.Split(filepath.Clean(path), "/")
	for hops := 0; len(comps) > 0; {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			out = filepath.Dir(out)
			continue
		}
		next := filepath.Join(out, c)
		fi, err := os.Lstat(next)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 || hops >= 40 {
			out = next
			continue
		}
		target, err := os.Readlink(next)
		if err != nil {
			out = next
			continue
		}
		hops++
		if filepath.IsAbs(target) {
			out = "/"
		}
		comps = append(strings.Split(target, "/"), comps...)
	}
	return out
}

// RestoreDataInput names the restore to perform.
type RestoreDataInput struct {
	Plan      string `json:"plan"`
	Site      string `json:"site"`
	Op        string `json:"op"` // restore id: names the staging beside the target
	Point     string `json:"point"`
	To        string `json:"to,omitempty"`
	SiteEpoch uint64 `json:"siteEpoch"`
	// KeepSetuid recreates the setuid and setgid bits of files restored
	// from a repository without a key. Such a repository's content is not
	// authenticated: whoever can write to its bucket could plant a setuid
	// program, so by default the bits are left out.
	KeepSetuid bool `json:"keepSetuid,omitempty"`
	// At (postgres) is the recovery target time; zero: the newest WAL.
	At time.Time `json:"at,omitzero"`
	// Force (postgres) lets the restore stop a server running as a primary
	// in the target. Switch (postgres) marks a failover's or failback's
	// restore: the server may be stopped too, and once promoted it archives
	// its WAL into this site's repository as the plan's active database; any
	// other restore's server archives nothing, so that its new timeline never
	// enters the plan's WAL.
	Force  bool `json:"force,omitempty"`
	Switch bool `json:"switch,omitempty"`
}

// RestoreDataResult counts what was restored.
type RestoreDataResult struct {
	Target       string `json:"target"`
	Entries      int64  `json:"entries"`
	Files        int64  `json:"files"`
	Bytes        int64  `json:"bytes"`        // logical size of the files
	BytesWritten int64  `json:"bytesWritten"` // data written (holes and zero chunks are not)
	Chunks       int64  `json:"chunksVerified"`
	// ChunksLocal were taken from the file the target already held at the
	// same path and offset, their SHA-256 matching the chunk id, instead of
	// being fetched from the store: a restore over an earlier one (a warm
	// standby, a failback round) moves only what changed.
	ChunksLocal int64 `json:"chunksLocal"`
	BytesLocal  int64 `json:"bytesLocal"`
	// FilesRechecked are files an earlier attempt reported finished, which a
	// resumed attempt read back (size, modification time and the SHA-256
	// of every chunk) instead of trusting; FilesRewritten failed that check
	// and were written again.
	FilesRechecked int64 `json:"filesRechecked,omitempty"`
	FilesRewritten int64 `json:"filesRewritten,omitempty"`
	// SetuidCleared counts files restored without the setuid or setgid bits
	// they have in the restore point (see RestoreDataInput.KeepSetuid).
	SetuidCleared int64 `json:"setuidCleared,omitempty"`
	// ServerStarted (postgres): the restored server was started and has
	// recovered; RecoveredTo is the commit time of the last transaction it
	// replayed, the time its data reaches (zero: none was replayed).
	ServerStarted bool      `json:"serverStarted,omitempty"`
	RecoveredTo   time.Time `json:"recoveredTo,omitzero"`
}

// restoreResume is a restore's resume details: a datapath.RestoreCheckpoint
// while it writes, then the result once it is committed.
type restoreResume struct {
	Next      int               `json:"next"` // first entry not yet durably written
	Committed bool              `json:"committed"`
	Result    RestoreDataResult `json:"result"`
}

// stats are the counts of res that the restorer keeps.
func (res RestoreDataResult) stats() datapath.RestoreStats {
	return datapath.RestoreStats{
		Files: res.Files, BytesWritten: res.BytesWritten, Chunks: res.Chunks, ChunksLocal: res.ChunksLocal,
		BytesLocal: res.BytesLocal, FilesRechecked: res.FilesRechecked, FilesRewritten: res.FilesRewritten,
	}
}

// setStats sets the counts of res that the restorer keeps.
func (res *RestoreDataResult) setStats(s datapath.RestoreStats) {
	res.Files, res.BytesWritten, res.Chunks, res.ChunksLocal = s.Files, s.BytesWritten, s.Chunks, s.ChunksLocal
	res.BytesLocal, res.FilesRechecked, res.FilesRewritten = s.BytesLocal, s.FilesRechecked, s.FilesRewritten
}

// RestoreData writes the restore point into a staging area beside the target,
// verifying every chunk against its id, then moves it into place. A corrupt
// chunk stops the restore with an error naming it: the target never receives
// a byte that did not verify.
//
// A retried attempt continues after the last file reported finished, which
// was synced to disk (data and directory entry) before it was reported; it
// reads back every file it skips and writes again any that does not match.
// The staging is removed whenever no attempt will follow (a permanent error,
// cancellation, fencing, the last attempt's timeout); what a crash leaves is
// swept by the next restore into the same target.
func (a *Activities) RestoreData(ctx context.Context, in RestoreDataInput) (RestoreDataResult, error) {
	started := time.Now()
	pg, err := a.postgresTarget(in)
	var res RestoreDataResult
	switch {
	case err != nil:
	case pg != nil:
		res, err = a.restorePostgres(ctx, in, pg) // pgrestore.go
	default:
		res, err = a.restoreData(ctx, in)
	}
	if err == nil {
		metrics.OperationDone("restore", time.Since(started))
	}
	return res, temporalError(err)
}

func (a *Activities) restoreData(ctx context.Context, in RestoreDataInput) (RestoreDataResult, error) {
	if sc, ok := a.execRestore(in.Plan, in.Site, in.To); ok {
		return a.restoreStream(ctx, sc, in)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return RestoreDataResult{}, err
	}
	tgt, err := a.restoreTarget(in.Plan, in.Site, in.To)
	if err != nil {
		return RestoreDataResult{}, err
	}
	var st restoreResume
	if resumeDetails(ctx, &st) && st.Committed {
		return st.Result, nil
	}
	// Heartbeats begin before the staging is set up, which may sweep a
	// stale one of millions of files.
	rep := a.startReporter(ctx, "restore")
	defer rep.close()
	rs, err := tgt.Begin(rep.work, in.Op)
	if err != nil {
		return RestoreDataResult{}, fmt.Errorf("begin restore into %s: %w", tgt.Describe(), err)
	}
	defer rs.Close()
	if !rs.Resumed() {
		// Nothing staged survived (another host, or it was cleaned up):
		// every file must be written again, whatever the heartbeat says,
		// and the heartbeats say so from now on.
		st = restoreResume{}
		rep.Resume(st)
	}
	res, err := a.restoreInto(rep.work, r, tgt, rs, in, st, rep)
	if err != nil && a.restoreEnds(ctx, err) {
		// No attempt will resume this staging: remove it now rather than
		// leave a full-size copy beside the target.
		if aerr := rs.Abort(); aerr != nil {
			a.log.Error().Err(aerr).Str("target", tgt.Describe()).Msg("removing the staged restore failed; the next restore into this target sweeps it")
		} else {
			a.log.Info().Str("target", tgt.Describe()).Str("op", in.Op).AnErr("cause", err).Msg("restore stopped; its staging was removed")
		}
	}
	return res, err
}

// restoreInto runs in rep's work context, from st (empty when nothing
// staged survived).
func (a *Activities) restoreInto(ctx context.Context, r *repo.Repo, tgt source.Target, rs source.Restore, in RestoreDataInput, st restoreResume, rep *reporter) (RestoreDataResult, error) {
	p, err := r.OpenPoint(ctx, in.Point)
	if err != nil {
		return RestoreDataResult{}, err
	}
	m := &p.Meta // header and totals: the entries are read as a stream
	if err := checkEpoch(ctx, r, in.SiteEpoch, "restore "+in.Point); err != nil {
		return RestoreDataResult{}, err
	}
	rep.Update(func(p *Progress) { p.BytesTotal, p.FilesTotal = m.Totals.Bytes, m.Totals.Files })
	// Until this attempt reports progress of its own, the earlier one's
	// stands: an attempt lost before its first checkpoint must not make the
	// next one start over.
	rep.Resume(st)

	w := &datapath.Restorer{Repo: r, Target: rs, Reporter: rep, Log: a.log, Interval: a.HeartbeatInterval}
	if l, ok := tgt.(datapath.LocalFiles); ok {
		w.Local = l
	}
	w.ClearSetuid = !r.Encrypted() && !in.KeepSetuid
	if err := w.Run(ctx, p, st.Next, st.Result.stats()); err != nil {
		return RestoreDataResult{}, err
	}
	if n := w.SetuidFiles(); w.ClearSetuid && n > 0 {
		a.log.Warn().Str("target", tgt.Describe()).Int64("files", n).
			Msg("restored without setuid/setgid bits: the repository has no key, so its content is not authenticated; restore with --setuid to keep them")
	}
	if err := a.swap(ctx, in, r, rs); err != nil {
		return RestoreDataResult{}, err
	}
	res := RestoreDataResult{Target: tgt.Describe()}
	res.setStats(w.Result())
	res.Entries, res.Files, res.Bytes = m.Totals.Entries, m.Totals.Files, m.Totals.Bytes
	if w.ClearSetuid {
		res.SetuidCleared = w.SetuidFiles()
	}
	rep.Resume(restoreResume{Next: int(m.Totals.Entries), Committed: true, Result: res})
	return res, nil
}

// restoreEnds reports whether err ends the restore, so that no later attempt
// will resume its staging: a permanent error (corrupt data, fenced, refused),
// cancellation by its workflow (or the workflow gone), the last attempt the
// retry policy allows, or the schedule-to-close timeout. A worker shutting
// down, a transient error or this attempt's own timeout leave the staging to
// the next attempt.
func (a *Activities) restoreEnds(ctx context.Context, err error) bool {
	if _, ok := drivers.IsPermanent(err); ok {
		return true
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.NonRetryable() {
		return true
	}
	if !activity.IsActivity(ctx) {
		return false
	}
	info := activity.GetInfo(ctx)
	if ctx.Err() == context.Canceled {
		cause := context.Cause(ctx)
		if temporal.IsCanceledError(cause) {
			return true
		}
		var nf *serviceerror.NotFound
		if errors.As(cause, &nf) {
			// The server no longer knows this attempt: its workflow ended
			// (cancelled, terminated), or it timed out and another
			// attempt took over. Only the workflow can tell which.
			return a.workflowClosed(info.WorkflowExecution.ID, info.WorkflowExecution.RunID)
		}
		return false
	}
	if rp := info.RetryPolicy; rp != nil && rp.MaximumAttempts > 0 && info.Attempt >= rp.MaximumAttempts {
		return true
	}
	// An attempt's deadline shorter than its start-to-close timeout is the
	// schedule-to-close deadline, after which nothing is retried.
	return ctx.Err() == context.DeadlineExceeded && info.StartToCloseTimeout > 0 &&
		info.Deadline.Before(info.StartedTime.Add(info.StartToCloseTimeout-time.Second))
}

// workflowClosed reports whether the workflow run has ended; false when that
// cannot be learnt.
func (a *Activities) workflowClosed(id, runID string) bool {
	if a.client == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	desc, err := a.client.DescribeWorkflowExecution(ctx, id, runID)
	if err != nil {
		a.log.Warn().Err(err).Str("workflow", id).Msg("cannot tell whether the restore's workflow ended; its staging is kept")
		return false
	}
	return desc.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING
}

// ListPointsInput names the site whose restore points are listed.
type ListPointsInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
}

// PointInfo is one restore point as listed.
type PointInfo struct {
	Point    string    `json:"point"`
	Snapshot time.Time `json:"snapshot"`
	Size     int64     `json:"manifestSize"`
	Pinned   bool      `json:"pinned,omitempty"` // drorch points pin: retention keeps it
}

// ListPointsResult lists the restore points at a site, oldest first.
type ListPointsResult struct {
	Repository string      `json:"repository"`
	Epoch      uint64      `json:"epoch"`
	Points     []PointInfo `json:"points"`
}

// ListPoints lists the valid restore points at a site (those whose manifest
// was written).
func (a *Activities) ListPoints(ctx context.Context, in ListPointsInput) (ListPointsResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	pts, err := r.Points(ctx)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	pins, err := r.Pins(ctx)
	if err != nil {
		return ListPointsResult{}, temporalError(err)
	}
	res := ListPointsResult{Repository: r.Location(), Epoch: ep.Epoch, Points: []PointInfo{}}
	for _, p := range pts {
		_, pinned := pins[p.ID]
		res.Points = append(res.Points, PointInfo{Point: p.ID, Snapshot: p.Time, Size: p.Size, Pinned: pinned})
	}
	return res, nil
}
