package activities

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/source/dir"
	"github.com/drorch/drorch/internal/config"
)

// SourceSnapshotInput names the backup whose point-in-time view of its
// source is made (Phase "create") or dropped ("remove").
type SourceSnapshotInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Op    string `json:"op"`
	Phase string `json:"phase"` // create or remove
	OK    bool   `json:"ok"`    // remove: the backup succeeded
}

// SourceSnapshotResult says what was made.
type SourceSnapshotResult struct {
	// Mode is "reflink" or "commands"; "" when the source reads its live
	// tree (no snapshot configured), and the backup then removes nothing.
	Mode string `json:"mode,omitempty"`
	// Path is where the backup reads the view.
	Path string `json:"path,omitempty"`
	// Warnings are the failures of removing the view: the data was read,
	// so they do not undo the backup, but the operator must see them (a
	// snapshot left behind fills its volume).
	Warnings []string `json:"warnings,omitempty"`
}

// clonePrefix starts the name of a reflink clone, made beside the source:
// <parent>/.drorch-snapshot-<plan>-<op>.
const clonePrefix = ".drorch-snapshot-"

// staleCloneAge is how old a clone must be to be removed as stale when the
// running backups cannot be listed (no Temporal client).
const staleCloneAge = 24 * time.Hour

// SourceSnapshot makes or drops the point-in-time view of a dir source with
// a snapshot mode (docs/snapshots.md). A source without one needs nothing:
// the result's Mode is "".
//
// reflink, create: removes the plan's stale clones (of backups no longer
// running), then clones the tree beside the source, on the same file system
// (dir.Clone). A file system without reflinks, or a source that is a mount
// point (its parent is another file system), is a permanent error. A
// retried attempt starts the clone again.
//
// commands, create: runs the create hooks in order (an attempt after the
// first runs the remove hooks before, for what a crashed attempt left),
// then checks the path exists. A failing hook runs the remove hooks (even
// when the attempt was cancelled) and fails with a retryable error carrying
// its cleaned output, as a pre hook does.
//
// remove: drops the clone, or runs every remove hook; failures are
// warnings, never an error. Hooks get DRORCH_PLAN, DRORCH_SITE,
// DRORCH_PHASE (snapshot-create or snapshot-remove), DRORCH_SOURCE_PATH,
// DRORCH_SNAPSHOT_PATH and, on remove, DRORCH_BACKUP_OK.
func (a *Activities) SourceSnapshot(ctx context.Context, in SourceSnapshotInput) (SourceSnapshotResult, error) {
	if in.Phase != "create" && in.Phase != "remove" {
		return SourceSnapshotResult{}, temporalError(drivers.Permanentf(drivers.ReasonInvalidInput, "source snapshot phase %q: want create or remove", in.Phase))
	}
	sc, _, err := a.sourceAt(in.Plan, in.Site)
	if err != nil || sc.Snapshot == nil {
		return SourceSnapshotResult{}, temporalError(err)
	}
	stop := keepBeating(ctx)
	defer stop()
	res := SourceSnapshotResult{Mode: sc.Snapshot.Mode(), Path: a.snapshotPath(sc, in.Plan, in.Op)}
	if in.Phase == "remove" {
		res.Warnings = a.removeSnapshot(ctx, in, sc)
		return res, nil
	}
	if sc.Snapshot.Reflink {
		err = a.createClone(ctx, in, sc)
	} else {
		err = a.createCommands(ctx, in, sc)
	}
	if err != nil {
		return SourceSnapshotResult{}, temporalError(err)
	}
	a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Str("mode", res.Mode).Str("path", res.Path).Msg("source snapshot made")
	return res, nil
}

// snapshotPath is where a backup op reads a source with a snapshot mode.
func (a *Activities) snapshotPath(sc *config.Source, plan, op string) string {
	if sc.Snapshot.Reflink {
		return dir.CloneRoot(cloneDir(sc.Path, plan, op))
	}
	return sc.Snapshot.Path
}

func cloneDir(src, plan, op string) string {
	return filepath.Join(filepath.Dir(src), clonePrefix+plan+"-"+op)
}

// readSource is the source a backup op lists and reads: the live tree, or
// with fromSnapshot the view SourceSnapshot made. live names the source as
// it is recorded in the result, the live tree's, whatever was read.
func (a *Activities) readSource(plan, site, op string, fromSnapshot bool) (*config.Source, source.Source, string, error) {
	sc, d, err := a.sourceAt(plan, site)
	if err != nil {
		return nil, nil, "", err
	}
	if d == nil {
		// A source that is no tree (exec) has nothing to list.
		return nil, nil, "", drivers.Permanentf(drivers.ReasonInvalidConfig, "plan %s at %s: the %s source is not a tree to read", plan, site, sc.Driver)
	}
	if !fromSnapshot {
		return sc, d, d.Describe(), nil
	}
	if sc.Snapshot == nil {
		return nil, nil, "", drivers.Permanentf(drivers.ReasonInvalidConfig,
			"plan %s at %s: the backup was started with a snapshot of its source, but the config has no snapshot for it any more; start a new backup", plan, site)
	}
	path := a.snapshotPath(sc, plan, op)
	v, err := dir.New(path)
	if err != nil {
		return nil, nil, "", err
	}
	return sc, snapshotView{v, fmt.Sprintf("%s (%s snapshot %s)", d.Describe(), sc.Snapshot.Mode(), path)}, d.Describe(), nil
}

// snapshotView reads a snapshot of a source and names both in messages.
type snapshotView struct {
	*dir.Dir
	desc string
}

func (v snapshotView) Describe() string { return v.desc }

func (a *Activities) createClone(ctx context.Context, in SourceSnapshotInput, sc *config.Source) error {
	parent := filepath.Dir(sc.Path)
	same, err := dir.SameFilesystem(sc.Path, parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return drivers.Permanentf(drivers.ReasonNotFound, "snapshot: reflink: source %s: %v", sc.Path, err)
		}
		return fmt.Errorf("snapshot: reflink: %w", err)
	}
	if !same {
		return drivers.Permanentf(drivers.ReasonInvalidConfig,
			"snapshot: reflink: source %s is the root of a %s file system (a mount point): the clone is made beside the source, and %s is another file system; make the source a directory below the mount point (e.g. %s) or use snapshot commands",
			sc.Path, dir.FSType(sc.Path), parent, filepath.Join(sc.Path, "data"))
	}
	a.removeStaleClones(ctx, parent, in.Plan, in.Op)
	dst := cloneDir(sc.Path, in.Plan, in.Op)
	if err := dir.RemoveTree(dst); err != nil { // an earlier attempt's partial clone
		return fmt.Errorf("snapshot: reflink: remove the earlier attempt's clone %s: %w", dst, err)
	}
	if err := dir.Clone(ctx, sc.Path, dst); err != nil {
		return fmt.Errorf("snapshot of %s at %s: %w", sc.Path, in.Site, err)
	}
	return nil
}

// removeStaleClones removes the clones of the plan's backups that are no
// longer running: a worker that crashed, or a backup terminated, left them.
// Without a Temporal client it removes only clones older than
// staleCloneAge. It never fails the backup: a clone it cannot remove is
// logged.
func (a *Activities) removeStaleClones(ctx context.Context, parent, plan, op string) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(clonePrefix+plan+"-") + `(backup-[0-9a-f]+)$`)
	var running []string
	listed := false
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil || m[1] == op {
			continue
		}
		if !listed {
			running, err = a.runningBackupOps(ctx)
			listed = true
			if err != nil {
				a.log.Warn().Err(err).Str("plan", plan).Msg("running backups not listed: only clones older than a day are removed")
			}
		}
		p := filepath.Join(parent, e.Name())
		if running == nil {
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < staleCloneAge {
				continue
			}
		} else if slices.Contains(running, m[1]) {
			continue
		}
		if err := dir.RemoveTree(p); err != nil {
			a.log.Warn().Err(err).Str("plan", plan).Str("clone", p).Msg("stale reflink clone not removed")
			continue
		}
		a.log.Warn().Str("plan", plan).Str("clone", p).Msg("removed the stale reflink clone of a backup that no longer runs")
	}
}

// runningBackupOps lists the staging names (op ids) of the running Backup
// workflows, derived from their run ids as the workflow derives its own.
// nil without a Temporal client.
func (a *Activities) runningBackupOps(ctx context.Context) ([]string, error) {
	if a.client == nil {
		return nil, errors.New("no Temporal client")
	}
	ops := []string{}
	var token []byte
	for {
		resp, err := a.client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: "WorkflowType = 'Backup' AND ExecutionStatus = 'Running'", NextPageToken: token,
		})
		if err != nil {
			return nil, err
		}
		for _, w := range resp.Executions {
			ops = append(ops, "backup-"+runSuffix(w.GetExecution().GetRunId()))
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return ops, nil
		}
	}
}

// runSuffix is the last eight hex digits of a run id, as workflows.opID
// takes them.
func runSuffix(run string) string {
	var hex []byte
	for i := len(run) - 1; i >= 0 && len(hex) < 8; i-- {
		if c := run[i]; c >= '0' && c <= '9' || c >= 'a' && c <= 'f' {
			hex = append([]byte{c}, hex...)
		}
	}
	if len(hex) == 0 {
		return "0"
	}
	return string(hex)
}

func (a *Activities) createCommands(ctx context.Context, in SourceSnapshotInput, sc *config.Source) error {
	s, secrets := sc.Snapshot, a.cfg.SecretValues()
	if activity.GetInfo(ctx).Attempt > 1 {
		// A crashed attempt may have left its snapshot: drop it first, so
		// that create does not find its name taken.
		a.removeCommands(ctx, in, sc, false)
	}
	env := snapshotEnv(in, sc, "snapshot-create")
	for i, h := range s.Hooks("create") {
		if err := runHook(ctx, h, env, secrets); err != nil {
			err = fmt.Errorf("source %s at %s, snapshot create %d: %w", sc.Path, in.Site, i+1, err)
			a.log.Warn().Str("plan", in.Plan).Str("site", in.Site).Err(err).Msg("snapshot create failed: running the remove commands")
			for _, w := range a.removeCommands(context.WithoutCancel(ctx), in, sc, false) {
				err = fmt.Errorf("%w; then %s", err, w)
			}
			return err
		}
	}
	if fi, err := os.Stat(s.Path); err != nil || !fi.IsDir() && !fi.Mode().IsRegular() {
		err := drivers.Permanentf(drivers.ReasonInvalidConfig,
			"source %s at %s: the snapshot create commands passed but left nothing to read at snapshot.path %s (a directory or a file): check that they mount the snapshot there", sc.Path, in.Site, s.Path)
		for _, w := range a.removeCommands(context.WithoutCancel(ctx), in, sc, false) {
			err = fmt.Errorf("%w; then %s", err, w)
		}
		return err
	}
	return nil
}

func (a *Activities) removeSnapshot(ctx context.Context, in SourceSnapshotInput, sc *config.Source) []string {
	if !sc.Snapshot.Reflink {
		return a.removeCommands(ctx, in, sc, in.OK)
	}
	p := cloneDir(sc.Path, in.Plan, in.Op)
	if err := dir.RemoveTree(p); err != nil {
		w := fmt.Sprintf("reflink clone %s at %s not removed (the next backup of the plan retries): %v", p, in.Site, err)
		a.log.Warn().Str("plan", in.Plan).Str("site", in.Site).Msg(w)
		return []string{w}
	}
	return nil
}

// removeCommands runs every remove hook, even after one failed, and
// returns the failures as warnings.
func (a *Activities) removeCommands(ctx context.Context, in SourceSnapshotInput, sc *config.Source, ok bool) []string {
	okEnv := "DRORCH_BACKUP_OK=0"
	if ok {
		okEnv = "DRORCH_BACKUP_OK=1"
	}
	env := append(snapshotEnv(in, sc, "snapshot-remove"), okEnv)
	var warnings []string
	for i, h := range sc.Snapshot.Hooks("remove") {
		if err := runHook(ctx, h, env, a.cfg.SecretValues()); err != nil {
			w := fmt.Sprintf("snapshot remove %d at %s: %v", i+1, in.Site, err)
			a.log.Warn().Str("plan", in.Plan).Str("site", in.Site).Int("hook", i+1).Str("error", w).Msg("snapshot remove failed")
			warnings = append(warnings, w)
		}
	}
	return warnings
}

func snapshotEnv(in SourceSnapshotInput, sc *config.Source, phase string) []string {
	return append(hookEnv(in.Plan, in.Site, phase), "DRORCH_SOURCE_PATH="+sc.Path, "DRORCH_SNAPSHOT_PATH="+sc.Snapshot.Path)
}

// keepBeating heartbeats every few seconds until stop is called, so a
// long clone or a slow snapshot command is seen alive, and a cancelled
// backup reaches the activity.
func keepBeating(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				activity.RecordHeartbeat(ctx)
			}
		}
	}()
	return func() { close(done) }
}
