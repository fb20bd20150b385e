package activities

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/datapath"
)

// A physical backup of a postgres source fits the Backup workflow's steps
// without changing them. The snapshot step streams pg_basebackup's tar into
// chunks and records each piece as uploaded (a base backup cannot be
// listed first and read later: what it sends is only valid as one stream);
// the upload step then only returns what the snapshot stored, and the commit
// step assembles the manifest from the uploaded pieces as for a directory.

// pgUploadName is the staging object that holds what the streamed snapshot
// uploaded, for the upload step to report.
const pgUploadName = "pg-upload"

// postgresAt returns the plan's source at site when it is a postgres one,
// nil when it is another driver.
func (a *Activities) postgresAt(planName, site string) (*config.Source, error) {
	p, err := a.plan(planName)
	if err != nil {
		return nil, err
	}
	sc, err := p.SourceAt(site)
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	if sc.Driver != "postgres" {
		return nil, nil
	}
	return sc, nil
}

func describePostgres(sc *config.Source) string {
	return fmt.Sprintf("postgres %s port %d (data directory %s)", sc.Host, sc.Port, sc.Path)
}

// pgEnv is the environment of a PostgreSQL client program run for sc: the
// password goes in PGPASSWORD, never on its command line.
func pgEnv(sc *config.Source) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	env = append(env, "PGHOST="+sc.Host, fmt.Sprintf("PGPORT=%d", sc.Port), "PGUSER="+sc.User,
		"PGDATABASE="+sc.Database, "PGSSLMODE="+sc.SSLMode, "PGAPPNAME=drorch", "PGCONNECT_TIMEOUT=10")
	if !sc.Password.IsZero() {
		env = append(env, "PGPASSWORD="+sc.Password.Value())
	}
	return env
}

// snapshotPostgres takes a base backup of sc and uploads it as it streams.
// A retried attempt that finds the finished record returns it; otherwise it
// runs pg_basebackup again from the start (a stream cannot resume), and the
// chunks the earlier attempt stored are not uploaded again.
func (a *Activities) snapshotPostgres(ctx context.Context, in SnapshotInput, sc *config.Source) (SnapshotResult, error) {
	if sc.Logical() {
		return a.snapshotLogical(ctx, in, sc) // pglogical.go
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return SnapshotResult{}, err
	}
	rep := a.startReporter(ctx, "base backup") // before the checks and the listing, which take minutes in a large repository
	defer rep.close()
	var res SnapshotResult
	if err := r.GetStaging(rep.work, in.Op, snapshotName, &res); err == nil {
		missing, err := firstMissing(rep.work, r, in.Op, res.Pieces, uploadedNames...)
		if err != nil {
			return SnapshotResult{}, err
		}
		if missing == res.Pieces {
			return res, nil
		}
		if err := r.DeleteStaging(rep.work, in.Op); err != nil {
			return SnapshotResult{}, err
		}
	} else if !drivers.IsNotFound(err) {
		return SnapshotResult{}, err
	}
	known, err := r.UsableChunks(rep.work)
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("list chunks at %s: %w", r.Location(), err)
	}
	u := datapath.NewUploader(r, known, rep)
	u.Slots = a.storeSlots
	res, err = a.baseBackup(rep.work, in, sc, u)
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("base backup of %s: %w", describePostgres(sc), err)
	}
	res.Kind = "postgres"
	if err := r.PutStaging(ctx, in.Op, pgUploadName, u.Result()); err != nil {
		return SnapshotResult{}, err
	}
	if err := r.PutStaging(ctx, in.Op, snapshotName, res); err != nil {
		return SnapshotResult{}, err
	}
	return res, nil
}

// baseBackup runs pg_basebackup in tar format to its stdout and stores the
// stream: every entry of the data directory with its content chunked,
// hashed and uploaded by the upload workers, in pieces recorded in staging.
// Memory stays bounded: at most datapath.UploadWorkers chunks are in flight.
func (a *Activities) baseBackup(ctx context.Context, in SnapshotInput, sc *config.Source, u *datapath.Uploader) (SnapshotResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// -X fetch: the WAL the backup needs to be consistent is in its own
	// tar, so a point restores even where no archived WAL reached; with
	// archiving on, the recovery goes on from the repository's WAL.
	cmd := exec.CommandContext(ctx, path.Join(sc.Bin, "pg_basebackup"),
		"--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast",
		"--no-password", "--label=drorch "+in.Plan+" "+in.Op)
	cmd.Env = pgEnv(sc)
	stderr := &tailBuffer{}
	stderr.Max = 16 << 10
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return SnapshotResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return SnapshotResult{}, drivers.Permanentf(drivers.ReasonInvalidConfig, "start %s: %v (check the source's bin)", cmd.Path, err)
	}
	res, serr := a.storeTar(ctx, out, u, in)
	if serr != nil {
		cancel()
	}
	// Read what is left, so pg_basebackup is not stuck writing to a pipe
	// no one reads while it is told to stop.
	io.Copy(io.Discard, out)
	werr := cmd.Wait()
	secrets := a.cfg.SecretValues()
	switch {
	case werr != nil && ctx.Err() == nil:
		text := stderr.text(secrets)
		if reason := basebackupRefusal(text); reason != "" {
			// Retrying will not change a refused login or a missing
			// pg_hba.conf line: the operator must, so say it now.
			return SnapshotResult{}, drivers.Permanentf(reason, "pg_basebackup: %v%s", werr, text)
		}
		return SnapshotResult{}, fmt.Errorf("pg_basebackup: %v%s", werr, text)
	case serr != nil:
		return SnapshotResult{}, serr
	case werr != nil:
		return SnapshotResult{}, werr
	}
	res.Source = describePostgres(sc)
	// The point is consistent from the end of the backup on: its time is
	// when pg_basebackup finished, so that a recovery target after it is
	// always past the backup's end.
	res.Snapshot = time.Now().UTC()
	return res, nil
}

// storeTar reads the tar stream into staged pieces of uploaded entries.
func (a *Activities) storeTar(ctx context.Context, rd io.Reader, u *datapath.Uploader, in SnapshotInput) (SnapshotResult, error) {
	var res SnapshotResult
	pieces, err := u.Entries(ctx, in.Op, func(ctx context.Context, w *datapath.EntryWriter) error {
		seen := map[string]bool{}
		label := false
		tr := tar.NewReader(rd)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read the tar stream: %w", err)
			}
			name := strings.TrimSuffix(strings.TrimPrefix(path.Clean("/"+h.Name), "/"), "/")
			if name == "" || name == "." {
				continue
			}
			if len(seen) == 0 {
				// The tar has no entry for the data directory itself: it
				// gets the owner of the files (the server's user) and the
				// mode PostgreSQL requires.
				root := datapath.StagedEntry{Path: []byte("."), Type: source.TypeDir, Mode: 0o700, UID: h.Uid, GID: h.Gid, ModTime: time.Now().UTC()}
				if err := w.Add(ctx, root, nil); err != nil {
					return err
				}
				seen["."] = true
			}
			if seen[name] {
				if h.Typeflag == tar.TypeDir {
					continue
				}
				return fmt.Errorf("the tar stream names %q twice", name)
			}
			e := datapath.StagedEntry{Path: []byte(name), Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid, ModTime: h.ModTime.UTC()}
			var content io.Reader
			switch h.Typeflag {
			case tar.TypeDir:
				e.Type = source.TypeDir
			case tar.TypeSymlink:
				e.Type, e.Target = source.TypeSymlink, []byte(h.Linkname)
			case tar.TypeReg:
				e.Type, e.Size, content = source.TypeFile, h.Size, tr
				if name == "backup_label" {
					label = true
				}
			default:
				a.log.Warn().Str("plan", in.Plan).Str("path", name).Msg("skipping a tar entry that is not a file, directory or symlink")
				res.Skipped++
				continue
			}
			seen[name] = true
			if err := w.Add(ctx, e, content); err != nil {
				return err
			}
			res.Entries++
			if e.Type == source.TypeFile {
				res.Files++
				res.Bytes += e.Size
			}
		}
		if !label {
			return drivers.Permanentf(drivers.ReasonInvalidInput, "the base backup has no backup_label at its root: not a pg_basebackup tar stream")
		}
		return nil
	})
	res.Pieces = pieces
	res.Entries++ // the root
	return res, err
}

// uploadPostgres is the upload step of a postgres backup: the snapshot
// step uploaded everything already; it reports what that stored.
func (a *Activities) uploadPostgres(ctx context.Context, in UploadInput, sc *config.Source) (UploadResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return UploadResult{}, err
	}
	if sc.Logical() {
		return a.uploadedStream(ctx, r, in) // the dump was stored by the snapshot step, as an exec stream is
	}
	var res UploadResult
	if err := r.GetStaging(ctx, in.Op, pgUploadName, &res); err != nil {
		if drivers.IsNotFound(err) {
			return UploadResult{}, drivers.Permanentf(drivers.ReasonNotFound, "the record of the streamed base backup is gone from %s (staging cleaned up or lost): run the backup again", r.Location())
		}
		return UploadResult{}, err
	}
	return res, nil
}

// basebackupRefusal classifies pg_basebackup's errors that no retry cures:
// the server refused the role or the address, or the setup cannot work.
// "" for the others (the server restarting, too many WAL senders busy, the
// network), which are retried.
func basebackupRefusal(stderr string) string {
	switch {
	case strings.Contains(stderr, "password authentication failed"),
		strings.Contains(stderr, "no password supplied"),
		strings.Contains(stderr, "no pg_hba.conf entry"),
		strings.Contains(stderr, "must be superuser or replication role"),
		strings.Contains(stderr, "permission denied to start WAL sender"):
		return drivers.ReasonAuth
	case strings.Contains(stderr, "can only write single tablespace to stdout"),
		strings.Contains(stderr, "incompatible server version"):
		return drivers.ReasonInvalidConfig
	}
	return ""
}
