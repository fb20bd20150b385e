package activities

// A postgres source in logical mode protects one database with pg_dump and
// pg_restore (docs/postgres.md, "Logical mode"). It is a stream, as an exec
// source's is: the source is given to the exec source's machinery
// (exec.go) as a pair of commands, pg_dump --format=custom writing the
// dump to its stdout and pg_restore --clean --if-exists reading it from its
// stdin, with the connection settings and the password in their
// environment, never on a command line. What this file adds is what a
// database needs around that: a check that the server answers before the
// dump (so that a server that is restarting is retried, while pg_dump's own
// failure is not), and before a restore the database's creation when it is
// missing and the refusal to overwrite a database that is read-write and
// serving clients.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/secret"
)

// logicalKind is the source kind (Manifest.Source) of a logical dump. It
// holds no backup_label, so WAL retention counts no WAL for it.
const logicalKind = "postgres-logical"

// logicalAt returns the plan's source at site when it is a postgres source
// in logical mode, nil otherwise.
func (a *Activities) logicalAt(plan, site string) *config.Source {
	p, err := a.cfg.Plan(plan)
	if err != nil {
		return nil
	}
	sc, err := p.SourceAt(site)
	if err != nil || !sc.Logical() {
		return nil
	}
	return sc
}

func describeLogical(sc *config.Source) string {
	return fmt.Sprintf("database %q on postgres %s port %d", sc.Database, sc.Host, sc.Port)
}

// logicalStream is sc as the exec source's machinery runs it: pg_dump as
// its backup command, pg_restore as its restore command.
//
// pg_dump: custom format (what pg_restore reads, table by table) without
// compression: drorch compresses every chunk, and an uncompressed dump lets
// the content-defined chunks of unchanged tables repeat from one dump to the
// next, so they are not stored again.
//
// pg_restore: --clean --if-exists drops each object of the dump before it
// creates it; --single-transaction makes the whole restore one transaction,
// so that a restore that fails (a chunk that does not verify, an object
// that cannot be dropped, the worker lost) leaves the database as it was,
// and a retry starts over on the same data; it implies --exit-on-error.
// Owners and privileges are restored as dumped: the standby's cluster must
// have the roles (they are the cluster's, not the database's: pg_dumpall
// --roles-only). PGOPTIONS lets it write into a database set read-only
// (default_transaction_read_only), as a standby is.
func logicalStream(sc *config.Source) *config.Source {
	env := map[string]string{
		"PGHOST": sc.Host, "PGPORT": strconv.Itoa(sc.Port), "PGUSER": sc.User, "PGDATABASE": sc.Database,
		"PGSSLMODE": sc.SSLMode, "PGAPPNAME": "drorch", "PGCONNECT_TIMEOUT": "10", "PGOPTIONS": "",
	}
	secrets := map[string]secret.Secret{}
	if sc.Password.Ref() != "" {
		secrets["PGPASSWORD"] = sc.Password
	}
	restoreEnv := map[string]string{}
	for k, v := range env {
		restoreEnv[k] = v
	}
	restoreEnv["PGOPTIONS"] = "-c default_transaction_read_only=off"
	d := *sc
	d.Backup = &config.ExecCommand{
		Command:   []string{sc.Bin + "/pg_dump", "--format=custom", "--compress=0", "--no-password"},
		Timeout:   config.DefaultExecTimeout,
		Env:       env,
		SecretEnv: secrets,
	}
	d.Restore = &config.ExecCommand{
		Command: []string{sc.Bin + "/pg_restore", "--clean", "--if-exists", "--single-transaction", "--exit-on-error",
			"--no-password", "--dbname=" + conninfoDB(sc.Database)},
		Timeout:   config.DefaultExecTimeout,
		Env:       restoreEnv,
		SecretEnv: secrets,
	}
	return &d
}

// conninfoDB is a libpq connection string naming only the database: a
// database name given to --dbname as it is would be read as a connection
// string when it holds "=". The rest comes from the PG* environment.
func conninfoDB(name string) string {
	return "dbname='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(name) + "'"
}

// snapshotLogical is Snapshot for a logical source: it checks that the
// database answers, then streams pg_dump's output into the restore point.
// The point's time is when the dump started: pg_dump reads one snapshot of
// the database, taken then.
func (a *Activities) snapshotLogical(ctx context.Context, in SnapshotInput, sc *config.Source) (SnapshotResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return SnapshotResult{}, err
	}
	conn, err := a.connectLogical(ctx, sc, sc.Database)
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("logical backup of %s: %w", describeLogical(sc), err)
	}
	conn.Close(context.Background())
	res, err := a.snapshotStream(ctx, r, logicalStream(sc), in)
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("logical backup of %s: %w", describeLogical(sc), err)
	}
	return res, nil
}

// restoreLogical is RestoreData for a logical source: pg_restore of the
// point's dump into the site's database, after checking that the database
// may be overwritten (creating it when it is missing). A retried attempt
// runs pg_restore again from the start of the stream; the attempt that
// failed was rolled back as a whole.
func (a *Activities) restoreLogical(ctx context.Context, in RestoreDataInput, sc *config.Source) (RestoreDataResult, error) {
	var st restoreResume
	if resumeDetails(ctx, &st) && st.Committed {
		return st.Result, nil
	}
	rep := a.startReporter(ctx, "check target") // connecting may take its timeout: heartbeat meanwhile
	err := a.prepareLogicalTarget(rep.work, sc, in.Force || in.Switch)
	rep.close()
	if err != nil {
		return RestoreDataResult{}, fmt.Errorf("logical restore into %s: %w", describeLogical(sc), err)
	}
	res, err := a.restoreStream(ctx, logicalStream(sc), in)
	if err != nil {
		return RestoreDataResult{}, fmt.Errorf("logical restore into %s: %w", describeLogical(sc), err)
	}
	return res, nil
}

// prepareLogicalTarget checks the database a logical restore writes into.
// A server in recovery cannot take it. A database that is read-write (its
// default_transaction_read_only off) and has client sessions other than
// this one is serving: it is refused unless overwrite (a forced restore,
// or a switch, which fenced the site first). A missing database is created,
// owned by the source's user.
func (a *Activities) prepareLogicalTarget(ctx context.Context, sc *config.Source, overwrite bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := a.connectLogical(ctx, sc, sc.Database)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "3D000" { // invalid_catalog_name: no such database
		return a.createLogicalDatabase(ctx, sc)
	}
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var (
		recovery, readOnly bool
		others             int64
	)
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')::bool,
		(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend')`).
		Scan(&recovery, &readOnly, &others)
	if err != nil {
		return fmt.Errorf("ask the server whether the database may be overwritten: %w", cleanError(err, a.cfg.SecretValues()))
	}
	switch {
	case recovery:
		return drivers.Permanentf(drivers.ReasonInvalidInput, "the server is in recovery (a physical standby): pg_restore cannot write to it; promote it first, or protect it with mode: physical")
	case !readOnly && others > 0 && !overwrite:
		return drivers.Permanentf(drivers.ReasonInvalidInput, "the database is read-write and has %d other client session(s): it may be serving, refusing to overwrite it; stop its clients or set it read-only (the plan's access does, default_transaction_read_only), or restore with --force", others)
	}
	a.log.Info().Str("database", sc.Database).Str("host", sc.Host).Int("port", sc.Port).Bool("readOnly", readOnly).Int64("sessions", others).Msg("logical restore: the database may be overwritten")
	return nil
}

// createLogicalDatabase creates the source's database, connected to the
// server's maintenance database (postgres, else template1). The source's
// user needs CREATEDB.
func (a *Activities) createLogicalDatabase(ctx context.Context, sc *config.Source) error {
	conn, err := a.connectLogical(ctx, sc, "postgres")
	if err != nil {
		var again error
		if conn, again = a.connectLogical(ctx, sc, "template1"); again != nil {
			return fmt.Errorf("the database does not exist, and to create it: %w", err)
		}
	}
	defer conn.Close(context.Background())
	var recovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery); err != nil {
		return fmt.Errorf("create the database: %w", cleanError(err, a.cfg.SecretValues()))
	}
	if recovery {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "the database does not exist and the server is in recovery (a physical standby), where it cannot be created; promote it first, or protect it with mode: physical")
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{sc.Database}.Sanitize()); err != nil {
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		switch {
		case pgErr != nil && pgErr.Code == "42P04": // duplicate_database: a concurrent attempt made it
			return nil
		case pgErr != nil && pgErr.Code == "42501": // insufficient_privilege
			return drivers.Permanentf(drivers.ReasonAuth, "the database does not exist and user %s may not create it (%v): create it, or grant the user CREATEDB", sc.User, cleanError(err, a.cfg.SecretValues()))
		}
		return fmt.Errorf("create the database: %w", cleanError(err, a.cfg.SecretValues()))
	}
	a.log.Info().Str("database", sc.Database).Str("host", sc.Host).Int("port", sc.Port).Msg("logical restore: created the missing database")
	return nil
}

// connectLogical connects to database on sc's server. What no retry cures
// (a refused login, a missing pg_hba.conf line, a database that does not
// exist) is permanent; a server that does not answer is retried.
func (a *Activities) connectLogical(ctx context.Context, sc *config.Source, database string) (*pgx.Conn, error) {
	c := *sc
	c.Database = database
	conn, err := pgConnect(ctx, &c)
	if err == nil {
		return conn, nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3D000": // the caller may create it; permanent otherwise
			return nil, drivers.Permanent(drivers.ReasonNotFound, &missingDatabase{pgErr, database})
		case "28P01", "28000", "42501": // invalid_password, invalid_authorization_specification (pg_hba.conf), insufficient_privilege
			return nil, drivers.Permanentf(drivers.ReasonAuth, "connect as %s to database %q: %v", sc.User, database, cleanError(err, a.cfg.SecretValues()))
		}
	}
	return nil, fmt.Errorf("connect as %s to database %q: %w", sc.User, database, cleanError(err, a.cfg.SecretValues()))
}

// missingDatabase is the server's "database does not exist", kept for the
// caller that creates it.
type missingDatabase struct {
	err  *pgconn.PgError
	name string
}

func (e *missingDatabase) Error() string {
	return fmt.Sprintf("database %q does not exist on the server", e.name)
}
func (e *missingDatabase) Unwrap() error { return e.err }
