package activities

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/repo"
)

// A restore of a postgres source into the plan's own data directory at a
// site: stop the server there (a standby; a running primary only when the
// restore may replace it), write the point's tree with the dir target
// (staged beside the data directory and moved into place, reusing what the
// files there already hold), configure recovery from the site's repository
// (restore_command = drorch-worker wal-fetch) to the newest WAL or to --at,
// then start the server and wait until it has recovered and been promoted.

// recoveryConf names the settings the restore writes into
// postgresql.auto.conf, replacing any the point's copy has.
var recoveryKeys = []string{"restore_command", "recovery_target", "recovery_target_time", "recovery_target_lsn",
	"recovery_target_name", "recovery_target_xid", "recovery_target_inclusive", "recovery_target_action",
	"recovery_target_timeline", "archive_mode", "archive_command", "primary_conninfo"}

// postgresTarget returns the postgres source a restore writes into: the
// plan's own source at the site when it is a postgres one; nil for a
// restore elsewhere (--to, a drill's sandbox), which writes the data
// directory's tree and starts nothing.
func (a *Activities) postgresTarget(in RestoreDataInput) (*config.Source, error) {
	if in.To != "" {
		return nil, nil
	}
	return a.postgresAt(in.Plan, in.Site)
}

// restorePostgres restores a point into the plan's data directory and
// recovers the server. A retried attempt after the tree was moved into
// place (recorded in the heartbeat) only configures and starts again.
func (a *Activities) restorePostgres(ctx context.Context, in RestoreDataInput, sc *config.Source) (RestoreDataResult, error) {
	if sc.Logical() {
		return a.restoreLogical(ctx, in, sc) // pglogical.go
	}
	var st restoreResume
	committed := resumeDetails(ctx, &st) && st.Committed
	if !committed {
		// pg_ctl stop may wait its two minutes: heartbeat meanwhile.
		rep := a.startReporter(ctx, "stop server")
		err := a.stopPostgres(rep.work, sc, in.Force || in.Switch)
		rep.close()
		if err != nil {
			return RestoreDataResult{}, err
		}
	}
	res, err := a.restoreData(ctx, in)
	if err != nil {
		return res, err
	}
	rep := a.startReporter(ctx, "recovery")
	defer rep.close()
	rep.Resume(restoreResume{Committed: true, Result: res})
	running := false
	if committed {
		// The attempt before this one may have started the server, which
		// may have promoted since: recovery.signal written into it again
		// would send it back into recovery at its next start, onto yet
		// another timeline.
		code, _, err := a.pgCtl(ctx, sc, "status")
		if err != nil {
			return res, err
		}
		running = code == 0
	}
	if !running {
		rc := in
		if !rc.Switch {
			// A restore forced over the active site's own database (a
			// rewind with --at, say) makes the plan's production server:
			// it archives like a switch's, or the plan would lose its WAL.
			if rc.Switch, err = a.atActiveSite(ctx, in.Plan, in.Site); err != nil {
				return res, err
			}
		}
		if err := a.configureRecovery(sc, rc); err != nil {
			return res, err
		}
	}
	if sc.AfterRestore != "start" {
		a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Str("data", sc.Path).Msg("restored and configured for recovery; afterRestore is stop: the server is left for the operator to start")
		return res, nil
	}
	if err := a.startPostgres(rep.work, sc, a.serverEnv(in.Plan, in.Site)); err != nil {
		return res, err
	}
	res.ServerStarted = true
	res.RecoveredTo, err = a.waitRecovered(rep.work, sc, rep)
	return res, err
}

// atActiveSite reports whether site is the plan's active site, as the
// site's own repository records the roles.
func (a *Activities) atActiveSite(ctx context.Context, plan, site string) (bool, error) {
	r, err := a.repo(plan, site)
	if err != nil {
		return false, err
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return false, err
	}
	active := ep.Active
	if active == "" {
		active = ep.Primary
	}
	if active == "" {
		p, err := a.plan(plan)
		if err != nil {
			return false, err
		}
		active = p.Primary
	}
	return active == site, nil
}

// baseServerEnv is the worker's environment a server may see: the path,
// locale, time zone and temporary directory, and nothing else. A superuser
// of the database can read its server's environment (COPY ... FROM PROGRAM
// 'env'), so no secret of the worker's goes there by default, nor a PG*
// variable (the password is not the server's business).
func baseServerEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "PATH" || name == "LANG" || name == "TZ" || name == "TMPDIR" || strings.HasPrefix(name, "LC_") {
			env = append(env, kv)
		}
	}
	return env
}

// serverEnv is the environment a restored server of plan at site starts
// with: baseServerEnv, plus the variables named by the env: references its
// restore_command and archive_command (drorch-worker wal-fetch and
// wal-push) resolve: the site's store keys and the plan's encryption key.
func (a *Activities) serverEnv(plan, site string) []string {
	env := baseServerEnv()
	var refs []string
	if s, err := a.cfg.Site(site); err == nil {
		refs = append(refs, s.Store.AccessKey.Ref(), s.Store.SecretKey.Ref())
	}
	if p, err := a.cfg.Plan(plan); err == nil && p.Encryption != nil {
		refs = append(refs, p.Encryption.Key.Ref())
	}
	for _, ref := range refs {
		if name, ok := strings.CutPrefix(ref, "env:"); ok {
			if v, set := os.LookupEnv(name); set {
				env = append(env, name+"="+v)
			}
		}
	}
	return env
}

// pgCred is the user the server's programs run as: the owner of the data
// directory when the worker runs as root (pg_ctl refuses root), nil (the
// worker's own) otherwise.
func pgCred(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	s := fi.Sys().(*syscall.Stat_t)
	if s.Uid == 0 {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "data directory %s is owned by root: PostgreSQL runs as the owner of its data directory, never root", dir)
	}
	return &syscall.Credential{Uid: s.Uid, Gid: s.Gid}, nil
}

// pgCtl runs pg_ctl with args on the data directory and returns its exit
// code and output (capped, cleaned of secrets).
func (a *Activities) pgCtl(ctx context.Context, sc *config.Source, args ...string) (int, string, error) {
	return a.pgCtlEnv(ctx, sc, baseServerEnv(), args...)
}

// pgCtlEnv is pgCtl with the environment env, which a server it starts
// inherits.
func (a *Activities) pgCtlEnv(ctx context.Context, sc *config.Source, env []string, args ...string) (int, string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(sc.Bin, "pg_ctl"), append(args, "-D", sc.Path)...)
	cred, err := pgCred(sc.Path)
	if err != nil {
		return 0, "", err
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	cmd.Dir = "/"
	out := &tailBuffer{}
	out.Max = 8 << 10
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	text := out.text(a.cfg.SecretValues())
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), text, nil
	}
	if err != nil {
		return 0, text, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	return 0, text, nil
}

// stopPostgres stops the server of the data directory when it runs. A
// standby (in recovery) is stopped; a primary only with stopPrimary (a
// forced restore, or a switch that fenced the site): it is read-write and
// may be serving.
func (a *Activities) stopPostgres(ctx context.Context, sc *config.Source, stopPrimary bool) error {
	if _, err := os.Stat(sc.Path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	code, out, err := a.pgCtl(ctx, sc, "status")
	if err != nil {
		return err
	}
	if code != 0 {
		return nil // 3: not running, 4: no data directory there
	}
	if !stopPrimary {
		standby, err := a.inRecovery(ctx, sc)
		switch {
		case err != nil:
			return drivers.Permanentf(drivers.ReasonInvalidInput, "the server of %s runs and does not say whether it is a standby (%v): refusing to replace its data; stop it first, or restore with --force", sc.Path, err)
		case !standby:
			return drivers.Permanentf(drivers.ReasonInvalidInput, "the server of %s is a running primary, read-write and maybe serving: refusing to replace its data; stop it first, or restore with --force", sc.Path)
		}
	}
	a.log.Info().Str("data", sc.Path).Msg("stopping the server before the restore")
	code, out, err = a.pgCtl(ctx, sc, "stop", "-m", "fast", "-w", "-t", "120")
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("pg_ctl stop %s: exit %d%s", sc.Path, code, out)
	}
	return nil
}

// pgConnect connects to the server as the source's config says.
func pgConnect(ctx context.Context, sc *config.Source) (*pgx.Conn, error) {
	host := sc.Host
	u := url.URL{Scheme: "postgres", User: url.User(sc.User), Path: "/" + sc.Database}
	q := url.Values{"sslmode": {sc.SSLMode}, "connect_timeout": {"10"}, "application_name": {"drorch"}}
	if strings.HasPrefix(host, "/") {
		q.Set("host", host)
		q.Set("port", strconv.Itoa(sc.Port))
	} else {
		u.Host = net.JoinHostPort(host, strconv.Itoa(sc.Port))
	}
	u.RawQuery = q.Encode()
	cc, err := pgx.ParseConfig(u.String())
	if err != nil {
		return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "postgres connection settings: %v", err)
	}
	cc.Password = sc.Password.Value() // never in a URL that an error could quote
	return pgx.ConnectConfig(ctx, cc)
}

func (a *Activities) inRecovery(ctx context.Context, sc *config.Source) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgConnect(ctx, sc)
	if err != nil {
		return false, cleanError(err, a.cfg.SecretValues())
	}
	defer conn.Close(context.Background())
	var rec bool
	err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
	return rec, err
}

// shellQuote quotes s for sh unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+=:,@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// confString quotes s as a postgresql.conf string.
func confString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// walCommand is the command line of drorch-worker's sub (wal-fetch or
// wal-push) for the plan at site: this worker's own executable and config.
func (a *Activities) walCommand(sub, plan, site string, args ...string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find this worker's executable for restore_command: %w", err)
	}
	parts := []string{shellQuote(exe), sub, "--plan", shellQuote(plan), "--site", shellQuote(site)}
	if f := a.cfg.File; f != "" && !strings.HasPrefix(f, "(") {
		if abs, err := filepath.Abs(f); err == nil {
			f = abs
		}
		parts = append(parts, "--config", shellQuote(f))
	}
	return strings.Join(append(parts, args...), " "), nil
}

// configureRecovery makes the restored data directory recover from the
// site's repository when it starts: recovery.signal, and restore_command,
// the recovery target (--at) and this site's archive_command (for when it
// is promoted) in postgresql.auto.conf, which overrides postgresql.conf.
func (a *Activities) configureRecovery(sc *config.Source, in RestoreDataInput) error {
	fetch, err := a.walCommand("wal-fetch", in.Plan, in.Site, "%f", "%p")
	if err != nil {
		return err
	}
	push, err := a.walCommand("wal-push", in.Plan, in.Site, "%p")
	if err != nil {
		return err
	}
	auto := filepath.Join(sc.Path, "postgresql.auto.conf")
	old, err := os.ReadFile(auto)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var b strings.Builder
	for line := range strings.SplitSeq(strings.TrimRight(string(old), "\n"), "\n") {
		key, _, _ := strings.Cut(strings.TrimSpace(line), "=")
		if slicesContains(recoveryKeys, strings.TrimSpace(key)) || line == "" {
			continue
		}
		b.WriteString(line + "\n")
	}
	fmt.Fprintf(&b, "# drorch restore of point %s at %s\n", in.Point, in.Site)
	fmt.Fprintf(&b, "restore_command = %s\n", confString(fetch))
	// A switch follows the newest timeline in the archive: after a failover
	// and back, the WAL the other site wrote on its own timeline is there,
	// shipped, and only switch restores archive, so every branch in it is
	// the plan's own history. Any other restore keeps to the base backup's
	// timeline.
	timeline := "current"
	if in.Switch {
		timeline = "latest"
	}
	fmt.Fprintf(&b, "recovery_target_timeline = '%s'\n", timeline)
	if in.Switch {
		// archive_mode too: set by ALTER SYSTEM at the old primary, it was
		// in this file and is dropped above with the other recovery keys.
		fmt.Fprintf(&b, "archive_mode = on\narchive_command = %s\n", confString(push))
	} else {
		fmt.Fprintf(&b, "archive_mode = off # a restore that is not a switch: its timeline stays out of the plan's WAL\n")
	}
	if !in.At.IsZero() {
		fmt.Fprintf(&b, "recovery_target_time = %s\n", confString(in.At.UTC().Format("2006-01-02 15:04:05.999999-07")))
	}
	fmt.Fprintf(&b, "recovery_target_action = 'promote'\n")
	cred, err := pgCred(sc.Path)
	if err != nil {
		return err
	}
	files := map[string]string{auto: b.String(), filepath.Join(sc.Path, "recovery.signal"): ""}
	for name, text := range files {
		if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
			return fmt.Errorf("configure recovery: %w", err)
		}
		if cred != nil {
			if err := os.Chown(name, int(cred.Uid), int(cred.Gid)); err != nil {
				return fmt.Errorf("configure recovery: %w", err)
			}
		}
	}
	os.Remove(filepath.Join(sc.Path, "standby.signal"))
	return nil
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// startPostgres starts the restored server (pg_ctl -w: until it accepts
// connections) unless a previous attempt did.
func (a *Activities) startPostgres(ctx context.Context, sc *config.Source, env []string) error {
	if code, _, err := a.pgCtl(ctx, sc, "status"); err != nil {
		return err
	} else if code == 0 {
		return nil
	}
	opts := "-p " + strconv.Itoa(sc.Port)
	if sc.Options != "" {
		opts += " " + sc.Options
	}
	log := sc.Path + ".log"
	if cred, _ := pgCred(sc.Path); cred != nil {
		if f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
			f.Close()
			os.Chown(log, int(cred.Uid), int(cred.Gid))
		}
	}
	a.log.Info().Str("data", sc.Path).Str("log", log).Msg("starting the restored server")
	code, out, err := a.pgCtlEnv(ctx, sc, env, "start", "-w", "-t", strconv.Itoa(int(sc.StartTimeout.Seconds())), "-l", log, "-o", opts)
	if err != nil {
		return err
	}
	if code != 0 {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "start the restored server of %s: pg_ctl exit %d%s; its log: %s%s", sc.Path, code, out, log, a.logTail(log))
	}
	return nil
}

// logTail is the end of the server's log for an error, cleaned.
func (a *Activities) logTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(data) > 2048 {
		data = data[len(data)-2048:]
	}
	t := &tailBuffer{}
	t.Max = 4096
	t.Write(data)
	return t.text(a.cfg.SecretValues())
}

// waitRecovered waits until the server has left recovery (reached the end
// of the repository's WAL, or the target, and been promoted) and returns
// the commit time of the last transaction it replayed: the time the data is
// recovered to. A server that stops meanwhile (the target was not reached,
// a WAL file is damaged) is a permanent error with its log.
func (a *Activities) waitRecovered(ctx context.Context, sc *config.Source, rep *reporter) (time.Time, error) {
	deadline := time.Now().Add(sc.StartTimeout)
	log := sc.Path + ".log"
	for {
		if code, _, err := a.pgCtl(ctx, sc, "status"); err == nil && code != 0 {
			return time.Time{}, drivers.Permanentf(drivers.ReasonInvalidInput, "the restored server of %s stopped during recovery; its log: %s%s", sc.Path, log, a.logTail(log))
		}
		rec, at, lsn, err := a.recoveryState(ctx, sc)
		if err == nil && !rec {
			return at, nil
		}
		if err == nil {
			rep.Update(func(p *Progress) { p.BytesDone = lsn })
		}
		if time.Now().After(deadline) {
			return time.Time{}, drivers.Permanentf(drivers.ReasonInvalidInput, "the restored server of %s is still recovering after %s (startTimeout)", sc.Path, sc.StartTimeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// recoveryState says whether the server is in recovery, the commit time of
// the last transaction replayed (zero when none was) and how far replay is.
func (a *Activities) recoveryState(ctx context.Context, sc *config.Source) (bool, time.Time, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgConnect(ctx, sc)
	if err != nil {
		return false, time.Time{}, 0, err
	}
	defer conn.Close(context.Background())
	var rec bool
	var at *time.Time
	var lsn *int64
	err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp(), (pg_last_wal_replay_lsn() - '0/0')::bigint").Scan(&rec, &at, &lsn)
	if err != nil {
		return false, time.Time{}, 0, err
	}
	var t time.Time
	if at != nil {
		t = at.UTC()
	}
	var n int64
	if lsn != nil {
		n = *lsn
	}
	return rec, t, n, nil
}

// pointAt returns the newest restore point whose base backup ended at or
// before at: recovery from it can reach at. A time before the oldest is a
// permanent error.
func (a *Activities) pointAt(ctx context.Context, r *repo.Repo, at time.Time) (*repo.Manifest, error) {
	pts, err := r.Points(ctx)
	if err != nil {
		return nil, fmt.Errorf("list restore points at %s: %w", r.Location(), err)
	}
	for i := len(pts) - 1; i >= 0; i-- {
		if pts[i].Time.After(at) {
			continue
		}
		// Opened first: a dir plan's point may hold millions of entries,
		// read only once it is known to be a (small) postgres point.
		p, err := r.OpenPoint(ctx, pts[i].ID)
		if err != nil {
			return nil, err
		}
		if m := &p.Meta; m.Source != "postgres" {
			return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "restore --at: point %s is a %s point; a time needs a postgres source with its WAL", m.Point, m.Source)
		}
		if !p.Meta.Snapshot.After(at) {
			return p.Manifest(ctx)
		}
	}
	oldest := "there is none"
	if len(pts) > 0 {
		oldest = "the oldest is " + pts[0].ID
	}
	return nil, drivers.Permanentf(drivers.ReasonNotFound, "restore --at %s: no base backup at %s ended before that time (%s); the earliest time a restore can reach is the end of the oldest base backup", at.UTC().Format(time.RFC3339), r.Location(), oldest)
}
