package activities

// The exec source: a backup command writes the data set to its stdout (a
// raw disk image, a `zfs send` stream, a vendor's export), a restore command
// reads it back on its stdin. See docs/sources.md.
//
// A stream fits the backup's Snapshot → Upload → Commit steps without a
// change to the workflow: for an exec source, Snapshot runs the command and
// streams its stdout through the chunker into the repository (only the
// chunks it lacks, in parallel), leaving in staging the uploaded2-NNNNNN
// records Commit assembles the manifest from and a record of the counts
// that Upload, which has nothing left to read, returns. A stream cannot be
// resumed mid-way: a retried Snapshot runs the command again, and the
// chunks the first attempt stored are not uploaded again.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/redact"
	"github.com/drorch/drorch/internal/repo"
)

// Names of an exec restore point's entries and of its staging records.
const (
	// StreamEntry is the path, in an exec source's restore point, of the
	// one file that holds the backup command's stdout. The manifest's root
	// "." comes first, as in every manifest; a restore with --to at a site
	// without a restore command writes the stream to <to>/stream.
	StreamEntry = "stream"

	streamUploadName = "stream-upload" // the UploadResult of the stream
	execDriver       = "exec"
)

// exec source ---------------------------------------------------------------

// isExec reports whether plan's source at site is an exec source, with it.
func (a *Activities) isExec(plan, site string) (*config.Source, bool) {
	p, err := a.cfg.Plan(plan)
	if err != nil {
		return nil, false
	}
	sc, err := p.SourceAt(site)
	if err != nil || sc.Driver != execDriver {
		return nil, false
	}
	return sc, true
}

// execEnv is the environment of an exec source's command: the worker's, then
// drorch's variables, then the configured env and secretEnv.
func execEnv(c *config.ExecCommand, vars ...string) []string {
	env := append(os.Environ(), vars...)
	for _, k := range sortedKeys(c.Env) {
		env = append(env, k+"="+c.Env[k])
	}
	for _, k := range sortedKeys(c.SecretEnv) {
		env = append(env, k+"="+c.SecretEnv[k].Value())
	}
	return env
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// streamCmd is a running backup or restore command.
type streamCmd struct {
	what    string // "backup command" or "restore command", for errors
	c       *config.ExecCommand
	cmd     *exec.Cmd
	parent  context.Context // the attempt's
	ctx     context.Context // ends at the command's timeout
	cancel  context.CancelFunc
	stderr  *tailBuffer
	secrets []string
}

// startStream starts c in its own process group, killed whole when ctx ends
// or its timeout passes; stdout or stdin (whichever is not nil) is the
// stream's end of a pipe.
func startStream(ctx context.Context, what string, c *config.ExecCommand, env, secrets []string, withStdout bool) (*streamCmd, io.ReadCloser, io.WriteCloser, error) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = config.DefaultExecTimeout
	}
	s := &streamCmd{parent: ctx, what: what, c: c, secrets: secrets, stderr: &tailBuffer{redact.TailWriter{Max: 2*redact.TailSize + 1024}}}
	s.ctx, s.cancel = context.WithTimeout(ctx, timeout)
	s.cmd = exec.CommandContext(s.ctx, c.Command[0], c.Command[1:]...)
	s.cmd.Env = env
	s.cmd.Stderr = s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	s.cmd.Cancel = func() error { return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) }
	s.cmd.WaitDelay = 5 * time.Second
	var (
		out io.ReadCloser
		in  io.WriteCloser
		err error
	)
	if withStdout {
		out, err = s.cmd.StdoutPipe()
	} else {
		in, err = s.cmd.StdinPipe()
	}
	if err == nil {
		err = s.cmd.Start()
	}
	if err != nil {
		s.cancel()
		// A command that cannot start (not found, not executable) will not
		// start on a retry either.
		return nil, nil, nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "start the %s %s: %v", what, c.Command[0], err)
	}
	return s, out, in, nil
}

// wait waits for the command and turns its failure into an error carrying
// the end of its stderr, capped and cleaned. A non-zero exit or the timeout
// is permanent: the command ran and said no, and running it again for an
// hour of retries would only hide that. A command killed by a signal not of
// drorch's making (the OOM killer) may pass on a retry. cause, when not nil,
// is what drorch itself failed at while the command ran (a chunk it could
// not store or fetch): it is reported unless it is only the broken pipe of
// a command that stopped early, whose own failure then explains it.
func (s *streamCmd) wait(cause error) error {
	defer s.cancel()
	if cause != nil && !isPipeErr(cause) {
		s.cancel() // stop a command still writing into, or reading from, a pipe nobody serves
	}
	err := s.cmd.Wait()
	name := s.c.Command[0]
	var exitErr *exec.ExitError
	switch {
	case s.parent.Err() != nil:
		// The attempt was cancelled or stalled: not the command's fault.
		if cause != nil && !isPipeErr(cause) {
			return cause
		}
		return fmt.Errorf("%s %s stopped: %w", s.what, name, context.Cause(s.parent))
	case s.ctx.Err() == context.DeadlineExceeded:
		return drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s timed out after %s and was killed%s", s.what, name, s.timeout(), s.stderr.text(s.secrets))
	case cause != nil && !isPipeErr(cause):
		return cause
	case errors.As(err, &exitErr) && exitErr.ExitCode() > 0:
		return drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s exited with status %d%s", s.what, name, exitErr.ExitCode(), s.stderr.text(s.secrets))
	case err != nil:
		return fmt.Errorf("%s %s: %v%s", s.what, name, err, s.stderr.text(s.secrets))
	case cause != nil:
		return drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s exited 0 before it read the whole stream (%v)%s", s.what, name, cause, s.stderr.text(s.secrets))
	}
	return nil
}

func (s *streamCmd) timeout() time.Duration {
	if s.c.Timeout == 0 {
		return config.DefaultExecTimeout
	}
	return s.c.Timeout
}

// streamKind is the manifest source kind of the stream sc backs up: exec,
// or postgres-logical for a pg_dump (pglogical.go).
func streamKind(sc *config.Source) string {
	if sc.Logical() {
		return logicalKind
	}
	return execDriver
}

// streamSource describes where the stream of sc comes from, for the
// manifest and the backup's result.
func streamSource(sc *config.Source) string {
	if sc.Logical() {
		return "pg_dump of " + describeLogical(sc)
	}
	return "exec " + sc.Backup.Command[0]
}

// streamReader names what reads a stream of kind back at a site.
func streamReader(kind string) string {
	if kind == logicalKind {
		return "pg_restore"
	}
	return "restore command"
}

func isPipeErr(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe)
}

// backup ----------------------------------------------------------------------

// snapshotStream is Snapshot for an exec source: it runs the backup command
// and stores its stdout as the restore point's one file (see the top of the
// file). A retried attempt that finds the stream recorded in staging returns
// it; otherwise it runs the command again from the start.
func (a *Activities) snapshotStream(ctx context.Context, r *repo.Repo, sc *config.Source, in SnapshotInput) (SnapshotResult, error) {
	var res SnapshotResult
	if err := r.GetStaging(ctx, in.Op, snapshotName, &res); err == nil {
		return res, nil
	} else if !drivers.IsNotFound(err) {
		return SnapshotResult{}, err
	}
	rep := a.startReporter(ctx, "stream") // before the listing, which takes minutes in a large repository
	defer rep.close()
	work := rep.work // ends when the work stalls
	// What a cut attempt left is of no use: the stream starts over.
	if err := r.DeleteStaging(work, in.Op); err != nil {
		return SnapshotResult{}, err
	}
	known, err := r.UsableChunks(work) // damaged chunks are uploaded again
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("list chunks at %s: %w", r.Location(), err)
	}
	snap := time.Now().UTC()
	_, suffix, _ := strings.Cut(in.Op, "-") // the op is <kind>-<suffix>, as the point's id
	point := repo.NewPointID(snap, suffix)
	res = SnapshotResult{Source: streamSource(sc), Kind: streamKind(sc), Snapshot: snap}

	u := datapath.NewUploader(r, known, rep)
	u.Slots = a.storeSlots
	env := execEnv(sc.Backup, "DRORCH_PLAN="+in.Plan, "DRORCH_SITE="+in.Site, "DRORCH_POINT="+point,
		"DRORCH_SNAPSHOT="+snap.Format(time.RFC3339Nano))
	cmd, stdout, _, err := startStream(work, "backup command", sc.Backup, env, a.cfg.SecretValues(), true)
	if err != nil {
		return SnapshotResult{}, err
	}
	a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Str("command", sc.Backup.Command[0]).Msg("backup command started")
	pieces, size, serr := u.Stream(work, in.Op, snap, StreamEntry, stdout)
	if err := cmd.wait(serr); err != nil {
		return SnapshotResult{}, err
	}
	if size == 0 {
		return SnapshotResult{}, drivers.Permanentf(drivers.ReasonInvalidInput, "backup command %s exited 0 but wrote nothing to its stdout", sc.Backup.Command[0])
	}
	res.Entries, res.Files, res.Bytes, res.Pieces = 2, 1, size, pieces
	up := u.Result()
	if err := r.PutStaging(ctx, in.Op, streamUploadName, up); err != nil {
		return SnapshotResult{}, err
	}
	// Last: its presence says the stream is complete in staging.
	if err := r.PutStaging(ctx, in.Op, snapshotName, res); err != nil {
		return SnapshotResult{}, err
	}
	a.log.Info().Str("plan", in.Plan).Int64("bytes", size).Int64("bytesNew", up.BytesNew).Int64("chunksNew", up.ChunksNew).Msg("backup command's stream stored")
	return res, nil
}

// uploadedStream is Upload for an exec source: Snapshot has stored the
// stream already; this returns what that took.
func (a *Activities) uploadedStream(ctx context.Context, r *repo.Repo, in UploadInput) (UploadResult, error) {
	var res UploadResult
	if err := r.GetStaging(ctx, in.Op, streamUploadName, &res); err != nil {
		if drivers.IsNotFound(err) {
			return UploadResult{}, drivers.Permanentf(drivers.ReasonNotFound, "upload: the record of the backup command's stream is gone from %s (staging cleaned up or lost): run the backup again", r.Location())
		}
		return UploadResult{}, err
	}
	return res, nil
}

// stagedKind is the source kind of the backup op for its manifest: the
// kind its snapshot recorded, "dir" for a snapshot that recorded none.
func stagedKind(ctx context.Context, r *repo.Repo, op string) (string, error) {
	var snap SnapshotResult
	if err := r.GetStaging(ctx, op, snapshotName, &snap); err != nil {
		if drivers.IsNotFound(err) {
			return "dir", nil // a workflow from before the snapshot record; only dir existed
		}
		return "", err
	}
	if snap.Kind == "" {
		return "dir", nil
	}
	return snap.Kind, nil
}

// restore ---------------------------------------------------------------------

// execRestore reports whether a restore of plan at site into to goes through
// the site's exec source, and returns that source. A site whose exec source
// has no restore command restores through it only to fail with noRestore;
// given a directory (--to) it restores the stream as a file there instead.
func (a *Activities) execRestore(plan, site, to string) (*config.Source, bool) {
	if sc := a.logicalAt(plan, site); sc != nil && to == "" {
		return logicalStream(sc), true // pglogical.go: pg_restore into the site's database
	}
	sc, ok := a.isExec(plan, site)
	if !ok || (sc.Restore == nil && to != "") {
		return nil, false
	}
	return sc, true
}

func noRestore(plan, site string) error {
	return drivers.Permanentf(drivers.ReasonInvalidConfig,
		"plan %s's exec source at %s has no restore command (source.%s.restore.command): that site is only backed up; add one, or restore the raw stream into a directory with --to PATH", plan, site, site)
}

// streamOf returns the stream entry of a restore point of kind (exec, or
// postgres-logical), or a permanent error saying why m is not one.
func streamOf(m *repo.Manifest, kind string) (*repo.Entry, error) {
	if m.Source != kind {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "restore point %s was taken from a %q source, not a %s source's stream: this site's %s cannot read it; restore it into a directory with --to PATH", m.Point, m.Source, kind, streamReader(kind))
	}
	for i := range m.Entries {
		if e := &m.Entries[i]; e.Path == StreamEntry && e.Type == source.TypeFile {
			return e, nil
		}
	}
	return nil, drivers.Permanentf(drivers.ReasonCorrupt, "restore point %s has no %q entry", m.Point, StreamEntry)
}

// prepareRestoreStream is PrepareRestore for an exec source's restore
// command.
func (a *Activities) prepareRestoreStream(ctx context.Context, sc *config.Source, in PrepareRestoreInput) (PrepareRestoreResult, error) {
	if sc.Restore == nil {
		return PrepareRestoreResult{}, noRestore(in.Plan, in.Site)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	m, err := a.manifest(ctx, r, in.Point)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	if _, err := streamOf(m, streamKind(sc)); err != nil {
		return PrepareRestoreResult{}, err
	}
	if !in.At.IsZero() {
		return PrepareRestoreResult{}, drivers.Permanentf(drivers.ReasonInvalidInput, "restore --at: plan %s's source at %s is a %s stream, with no WAL to recover to a time; --at needs a postgres source in physical mode: leave it out, or choose the point with --point", in.Plan, in.Site, streamKind(sc))
	}
	have, err := r.Chunks(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	if err := r.CheckPresent("restore point "+m.Point, repo.Needs(m), have); err != nil {
		return PrepareRestoreResult{}, err
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return PrepareRestoreResult{}, err
	}
	res := PrepareRestoreResult{PointSummary: summary(m, in.Site), Target: streamTarget(sc, in.To), SiteEpoch: ep.Epoch}
	if in.To != "" {
		res.Resolved = resolvePath(in.To)
	}
	return res, nil
}

func streamTarget(sc *config.Source, to string) string {
	if sc.Logical() {
		return describeLogical(sc)
	}
	t := "exec " + sc.Restore.Command[0]
	if to != "" {
		t += " into " + to
	}
	return t
}

// restoreStream is RestoreData for an exec source: the point's stream is
// written to the restore command's stdin in order, every chunk verified
// against its id before it is written (fetched ahead, in parallel). The
// command gets DRORCH_PLAN, DRORCH_SITE, DRORCH_POINT, DRORCH_SNAPSHOT,
// DRORCH_SIZE (the stream's length in bytes), and with --to DRORCH_TARGET
// (the directory, created if missing), plus DRORCH_DRILL=1 when that is the
// plan's drill sandbox. A retried attempt runs the command again from the
// start of the stream.
func (a *Activities) restoreStream(ctx context.Context, sc *config.Source, in RestoreDataInput) (RestoreDataResult, error) {
	if sc.Restore == nil {
		return RestoreDataResult{}, noRestore(in.Plan, in.Site)
	}
	var st restoreResume
	if resumeDetails(ctx, &st) && st.Committed {
		return st.Result, nil
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return RestoreDataResult{}, err
	}
	m, err := r.GetManifest(ctx, in.Point)
	if err != nil {
		return RestoreDataResult{}, err
	}
	e, err := streamOf(m, streamKind(sc))
	if err != nil {
		return RestoreDataResult{}, err
	}
	if err := checkEpoch(ctx, r, in.SiteEpoch, "restore "+in.Point); err != nil {
		return RestoreDataResult{}, err
	}
	vars := []string{"DRORCH_PLAN=" + in.Plan, "DRORCH_SITE=" + in.Site, "DRORCH_POINT=" + m.Point,
		"DRORCH_SNAPSHOT=" + m.Snapshot.UTC().Format(time.RFC3339Nano), fmt.Sprintf("DRORCH_SIZE=%d", e.Size)}
	if in.To != "" {
		if err := os.MkdirAll(in.To, 0o700); err != nil {
			return RestoreDataResult{}, fmt.Errorf("create the restore target %s: %w", in.To, err)
		}
		vars = append(vars, "DRORCH_TARGET="+in.To)
		if p, err := a.plan(in.Plan); err == nil && p.Drill.Sandbox != "" && filepath.Clean(p.Drill.Sandbox) == filepath.Clean(in.To) {
			vars = append(vars, "DRORCH_DRILL=1")
		}
	}
	rep := a.startReporter(ctx, "restore")
	defer rep.close()
	work := rep.work
	rep.Update(func(p *Progress) { p.BytesTotal, p.FilesTotal, p.ChunksTotal = e.Size, 1, int64(len(e.Chunks)) })
	cmd, _, stdin, err := startStream(work, "restore command", sc.Restore, execEnv(sc.Restore, vars...), a.cfg.SecretValues(), false)
	if err != nil {
		return RestoreDataResult{}, err
	}
	a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Str("point", m.Point).Str("command", sc.Restore.Command[0]).Msg("restore command started")
	res := RestoreDataResult{Target: streamTarget(sc, in.To), Entries: m.Totals.Entries, Files: 1, Bytes: e.Size}
	ws, werr := datapath.WriteStream(work, r, e, stdin, rep)
	res.Chunks, res.BytesWritten = ws.Chunks, ws.BytesWritten
	if cerr := stdin.Close(); werr == nil && cerr != nil && !isPipeErr(cerr) {
		werr = cerr
	}
	if err := cmd.wait(werr); err != nil {
		return RestoreDataResult{}, err
	}
	rep.Resume(restoreResume{Next: len(m.Entries), Committed: true, Result: res})
	return res, nil
}

// verifyStream is VerifyTarget for a drill of an exec source: the restore
// command's output is the command's own format, which drorch cannot read
// back; every byte it was given was verified against its chunk id on the
// way in, and the command exited 0. The plan's verification hooks (drill
// steps) check what the command made of it.
func (a *Activities) verifyStream(ctx context.Context, in VerifyTargetInput) (VerifyTargetResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return VerifyTargetResult{}, err
	}
	m, err := r.GetManifest(ctx, in.Point)
	if err != nil {
		return VerifyTargetResult{}, err
	}
	e, err := streamOf(m, execDriver)
	if err != nil {
		return VerifyTargetResult{}, err
	}
	return VerifyTargetResult{Entries: m.Totals.Entries, Bytes: e.Size, Chunks: m.Totals.Chunks}, nil
}
