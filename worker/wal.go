package main

// drorch-worker wal-push and wal-fetch are PostgreSQL's archive_command and
// restore_command (docs/wal.md):
//
//	archive_command = 'drorch-worker wal-push --plan P --site S --config F %p'
//	restore_command = 'drorch-worker wal-fetch --plan P --site S --config F %f %p'
//
// They run once per WAL file, so they start without Temporal: they read the
// config, open the plan's repository at the site and return.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/deployments/dev"
	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/redact"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/internal/secret"
)

// Exit codes of wal-push and wal-fetch. PostgreSQL takes any code up to 125
// from restore_command as "this file is not in the archive" (the end of
// recovery, or try again later in standby mode) and a code above 125 as a
// failure that stops recovery: a damaged WAL file must stop it, not be
// taken silently for the end of the archive.
const (
	walExitOK      = 0
	walExitAbsent  = 1   // wal-fetch: the repository has no such file
	walExitFailed  = 2   // bad usage or config; wal-push: a different file holds the name
	walExitStore   = 3   // the store did not answer or failed, after retries
	walExitCorrupt = 126 // wal-fetch: the stored file is damaged
)

// walExitFetchFailed is what wal-fetch exits with for every failure but an
// absent file: a config it cannot read, a refused key, a store that stays
// down. Any code up to 125 would tell PostgreSQL the archive ends here, and
// recovery would end early and promote, silently short of the WAL the
// repository holds; above 125 it stops recovery, and the restore fails
// loudly with drorch's message in the server's log.
const walExitFetchFailed = 127

// fetchExit maps wal-fetch's codes to the ones PostgreSQL must see: only
// success and an absent file stay below 126.
func fetchExit(code int) int {
	switch code {
	case walExitOK, walExitAbsent, walExitCorrupt:
		return code
	}
	return walExitFetchFailed
}

// walRetries are the waits between attempts after a transient store error:
// PostgreSQL calls the command again anyway (archive_command after about a
// minute), so a few seconds ride out a blip without holding the archiver.
var walRetries = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

// walCommand runs wal-push or wal-fetch when args begin with one; ok is
// false when they do not.
func walCommand(args []string, stderr io.Writer) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	switch args[0] {
	case "wal-push":
		return walPush(args[1:], stderr), true
	case "wal-fetch":
		return fetchExit(walFetch(args[1:], stderr)), true
	}
	return 0, false
}

// walEnv is what both commands share: the repository and how to report.
type walEnv struct {
	cmd     string
	stderr  io.Writer
	r       *repo.Repo
	secrets []string
	ctx     context.Context
	cancel  context.CancelFunc
}

// failf prints one line naming the command and returns code.
func (e *walEnv) failf(code int, format string, args ...any) int {
	msg := redact.Values(fmt.Sprintf(format, args...), e.secrets)
	fmt.Fprintf(e.stderr, "drorch-worker %s: %s\n", e.cmd, strings.TrimRight(msg, "\n"))
	return code
}

// walSetup parses the flags common to both commands and opens the
// repository; nargs is the number of arguments after the flags.
func walSetup(cmd string, args []string, nargs int, usage string, stderr io.Writer) (*walEnv, []string, int) {
	e := &walEnv{cmd: cmd, stderr: stderr}
	fs := flag.NewFlagSet("drorch-worker "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	plan := fs.String("plan", "", "the plan whose repository holds the WAL (required)")
	site := fs.String("site", "", "the site this PostgreSQL runs at, whose repository is used (required)")
	cfgPath := fs.String("config", "", "deployment config file (default $DRORCH_CONFIG, then ./drorch.yaml, then the embedded dev config)")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: drorch-worker %s --plan P --site S [--config FILE] %s\n", cmd, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, walExitFailed
	}
	if *plan == "" || *site == "" || fs.NArg() != nargs {
		fs.Usage()
		return nil, nil, walExitFailed
	}
	// Only the secrets this command uses are read, so that PostgreSQL's
	// environment needs no more than the store's keys and the plan's.
	cfg, err := config.Load(*cfgPath, config.WithoutSecrets())
	if errors.Is(err, config.ErrNoConfig) {
		cfg, err = config.Parse(dev.Name, dev.Config, config.WithoutSecrets())
	}
	if err == nil {
		err = resolveWALSecrets(cfg, *plan, *site)
	}
	if err != nil {
		return nil, nil, e.failf(walExitFailed, "%v", err)
	}
	a := activities.New(cfg, nil, zerolog.Nop())
	e.secrets = activities.Secrets(a, *plan, *site)
	if e.r, err = activities.OpenRepo(a, *plan, *site); err != nil {
		return nil, nil, e.failf(walExitFailed, "%v", err)
	}
	e.ctx, e.cancel = context.WithTimeout(context.Background(), *timeout)
	return e, fs.Args(), walExitOK
}

// resolveWALSecrets reads the secrets of a config loaded without them that
// the repository of plan at site needs: the site store's keys and the
// plan's encryption key.
func resolveWALSecrets(cfg *config.Config, plan, site string) error {
	p, err := cfg.Plan(plan)
	if err != nil {
		return err
	}
	s, err := cfg.Site(site)
	if err != nil {
		return err
	}
	resolve := func(field string, sec *secret.Secret) error {
		if sec.Ref() == "" {
			return nil
		}
		v, err := secret.Resolve(sec.Ref())
		if err != nil {
			return fmt.Errorf("%s: %s: %w", cfg.File, field, err)
		}
		*sec = v
		return nil
	}
	err = errors.Join(
		resolve("sites."+site+".store.accessKey", &s.Store.AccessKey),
		resolve("sites."+site+".store.secretKey", &s.Store.SecretKey))
	if p.Encryption != nil {
		err = errors.Join(err, resolve("plans."+plan+".encryption.key", &p.Encryption.Key))
	}
	return err
}

// retry runs op until it succeeds, fails for good (a permanent error, an
// absent file) or the retries are spent.
func (e *walEnv) retry(op func() error) error {
	for i := 0; ; i++ {
		err := op()
		if err == nil || i == len(walRetries) || e.ctx.Err() != nil || drivers.IsNotFound(err) {
			return err
		}
		if _, permanent := drivers.IsPermanent(err); permanent {
			return err
		}
		select {
		case <-time.After(walRetries[i]):
		case <-e.ctx.Done():
			return err
		}
	}
}

// walPush archives the WAL file at PATH (archive_command's %p). It exits 0
// once the store holds it, or an identical copy of it.
func walPush(args []string, stderr io.Writer) int {
	e, rest, code := walSetup("wal-push", args, 1, "PATH", stderr)
	if e == nil {
		return code
	}
	defer e.cancel()
	path := rest[0]
	name := filepath.Base(path)
	if err := repo.ValidWALName(name); err != nil {
		return e.failf(walExitFailed, "%s: %v", path, err)
	}
	plain, err := os.ReadFile(path)
	if err != nil {
		return e.failf(walExitFailed, "%v", err)
	}
	prepared := false
	err = e.retry(func() error {
		_, err := e.r.PutWAL(e.ctx, name, plain)
		if reason, _ := drivers.IsPermanent(err); reason == drivers.ReasonNoSuchBucket && !prepared {
			// The first segment may come before the first backup, which
			// creates the bucket: create it as a backup would, once.
			prepared = true
			if err := e.r.Store().Prepare(e.ctx); err != nil {
				return err
			}
			_, err = e.r.PutWAL(e.ctx, name, plain)
		}
		return err
	})
	switch {
	case err == nil:
		return walExitOK
	case errors.Is(err, repo.ErrWALConflict):
		return e.failf(walExitFailed, "%v: refusing to overwrite it; the archive may belong to another cluster (check --plan and --site)", err)
	}
	if _, permanent := drivers.IsPermanent(err); permanent {
		return e.failf(walExitFailed, "%v", err)
	}
	return e.failf(walExitStore, "%v (store unreachable or failing after %d attempts; PostgreSQL retries the segment later)", err, len(walRetries)+1)
}

// walFetch writes WAL file NAME (restore_command's %f) to DEST (%p),
// atomically: DEST appears whole or not at all.
func walFetch(args []string, stderr io.Writer) int {
	e, rest, code := walSetup("wal-fetch", args, 2, "NAME DEST", stderr)
	if e == nil {
		return code
	}
	defer e.cancel()
	name, dest := rest[0], rest[1]
	if err := repo.ValidWALName(name); err != nil {
		return e.failf(walExitFailed, "%v", err)
	}
	var plain []byte
	err := e.retry(func() error {
		var err error
		plain, err = e.r.GetWAL(e.ctx, name)
		return err
	})
	switch reason, permanent := drivers.IsPermanent(err); {
	case err == nil:
	case drivers.IsNotFound(err):
		return e.failf(walExitAbsent, "%s is not in the repository %s", name, e.r.Location())
	case permanent && reason == drivers.ReasonCorrupt:
		return e.failf(walExitCorrupt, "%v: refusing to hand PostgreSQL a damaged WAL file (exit %d stops recovery)", err, walExitCorrupt)
	case permanent:
		return e.failf(walExitFailed, "%v", err)
	default:
		return e.failf(walExitStore, "%v (store unreachable or failing after %d attempts)", err, len(walRetries)+1)
	}
	if err := writeAtomic(dest, plain); err != nil {
		return e.failf(walExitFailed, "%s: %v", name, err)
	}
	return walExitOK
}

// writeAtomic writes data to a temporary file beside dest and renames it
// over dest, so that PostgreSQL never reads a partial file. It does not
// fsync: the file is what recovery replays next and nothing else, and after
// a crash recovery starts again and fetches it anew. The fsyncs took up
// to a third of a fetch (go tool task bench, "fetch one WAL segment").
func writeAtomic(dest string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".drorch-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", dest, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dest)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", dest, err)
	}
	return nil
}
