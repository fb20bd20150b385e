// Package postgres switches a PostgreSQL cluster between read-only and
// read-write for a failover. Read-only is two locks, both needed:
//
//   - default_transaction_read_only for the whole cluster (ALTER SYSTEM and a
//     reload), so every session that does not ask otherwise is read-only;
//   - the application's login roles (Config.Roles) made NOLOGIN, and their
//     sessions ended, so the application cannot open a session at all.
//
// default_transaction_read_only alone is a default, not a lock: a session may
// run "SET default_transaction_read_only = off" or "BEGIN READ WRITE", and a
// role or database setting (ALTER ROLE … SET) overrides it for new sessions.
// NOLOGIN is what holds against the application's own roles; the default
// still stops any other role that was not listed (and the superuser's
// everyday sessions). Read-write is the reverse: the default reset, then the
// roles may log in again. drorch's own user is never among the roles, so it
// can always undo the fence; its sessions write by asking for a read-write
// transaction.
//
// The account needs superuser, or the ALTER SYSTEM privilege on
// default_transaction_read_only, CREATEROLE (with ADMIN OPTION on the roles,
// PostgreSQL 16 and later), pg_read_all_stats (to see other sessions) and
// pg_signal_backend (to end them; never a superuser's).
package postgres

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/secret"
)

// Config says how to reach the cluster. The zero values of Port, Database,
// SSLMode and Timeout take the defaults below.
type Config struct {
	Host     string
	Port     int // default 5432
	User     string
	Password secret.Secret
	Database string        // the one to connect to; the mode is the whole cluster's. Default "postgres"
	SSLMode  string        // disable, allow, prefer, require, verify-ca or verify-full; default "prefer"
	Timeout  time.Duration // bounds each connection and each statement, and each wait for the server; default 10s
	// Roles are the application's login roles: NOLOGIN while read-only.
	// Not the User, and no role drorch needs to log in as.
	Roles []string
}

const (
	DefaultPort     = 5432
	DefaultDatabase = "postgres"
	DefaultSSLMode  = "prefer"
	DefaultTimeout  = 10 * time.Second
)

// ReasonInRecovery is the permanent error reason of SetMode(ReadWrite) on a
// hot standby: it stays read-only until it is promoted.
const ReasonInRecovery = "InRecovery"

var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

type cluster struct {
	cfg  Config
	conn *pgx.ConnConfig
}

var _ access.Access = (*cluster)(nil)

// New checks cfg and returns the cluster's Access. It does not connect. An
// invalid cfg is a permanent InvalidConfig error.
func New(cfg Config) (access.Access, error) {
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.SSLMode == "" {
		cfg.SSLMode = DefaultSSLMode
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	invalid := func(format string, args ...any) error {
		return drivers.Permanentf(drivers.ReasonInvalidConfig, "postgres access: "+format, args...)
	}
	switch {
	case cfg.Host == "":
		return nil, invalid("host is required")
	case cfg.Port < 1 || cfg.Port > 65535:
		return nil, invalid("port %d: must be 1 to 65535", cfg.Port)
	case cfg.User == "":
		return nil, invalid("user is required")
	case cfg.Password.IsZero():
		return nil, invalid("password is required")
	case !slices.Contains(sslModes, cfg.SSLMode):
		return nil, invalid("sslmode %q: must be one of %s", cfg.SSLMode, strings.Join(sslModes, ", "))
	case cfg.Timeout < 0:
		return nil, invalid("timeout %s: must not be negative", cfg.Timeout)
	}
	for i, r := range cfg.Roles {
		switch {
		case r == "":
			return nil, invalid("roles[%d] is empty", i)
		case r == cfg.User:
			return nil, invalid("roles[%d]: %q is the user drorch connects as; a fence would lock drorch out and it could not lift it", i, r)
		case slices.Contains(cfg.Roles[:i], r):
			return nil, invalid("roles[%d]: %q is listed twice", i, r)
		}
	}

	// Every setting is spelled out so that the environment (PGHOST, PGOPTIONS,
	// PGTARGETSESSIONATTRS=read-write…) cannot change what is switched, and
	// the password stays out of the string, so out of any parse error.
	cs := fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=%s target_session_attrs=any",
		quote(cfg.Host), cfg.Port, quote(cfg.User), quote(cfg.Database), cfg.SSLMode)
	conn, err := pgx.ParseConfig(cs)
	if err != nil {
		return nil, invalid("%w", err)
	}
	conn.Password = cfg.Password.Value()
	conn.ConnectTimeout = cfg.Timeout
	conn.RuntimeParams = map[string]string{"application_name": "drorch"}
	// No prepared statements: every connection runs a handful of statements
	// once, and a pooler in front of the server must not get in the way.
	conn.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	return &cluster{cfg: cfg, conn: conn}, nil
}

// quote makes s one value of a keyword/value connection string.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func (c *cluster) Describe() string {
	return "postgres " + net.JoinHostPort(c.cfg.Host, strconv.Itoa(c.cfg.Port)) + "/" + c.cfg.Database
}

// Status reports the mode in force. Read-only: a hot standby (in recovery),
// or default_transaction_read_only on and every listed role NOLOGIN.
// Read-write: default_transaction_read_only off and every listed role able to
// log in. Anything between is an error wrapping access.ErrPartial that says
// what is in place and what is not; a listed role that does not exist is a
// permanent InvalidConfig error.
func (c *cluster) Status(ctx context.Context) (access.Mode, error) {
	conn, err := c.connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	st, err := c.state(ctx, conn)
	if err != nil {
		return "", err
	}
	if st.inRecovery {
		return access.ReadOnly, nil
	}
	canLogin, err := c.logins(ctx, conn)
	if err != nil {
		return "", err
	}
	var in, out []string // roles that can log in, roles that cannot
	for _, r := range c.cfg.Roles {
		if canLogin[r] {
			in = append(in, r)
		} else {
			out = append(out, r)
		}
	}
	switch {
	case st.readOnly && len(in) == 0:
		return access.ReadOnly, nil
	case !st.readOnly && len(out) == 0:
		return access.ReadWrite, nil
	case st.readOnly:
		return "", fmt.Errorf("%s: %w: default_transaction_read_only is on, but role(s) %s can log in and ask for a read-write transaction: set the mode again to finish the fence",
			c.Describe(), access.ErrPartial, strings.Join(in, ", "))
	default:
		return "", fmt.Errorf("%s: %w: role(s) %s cannot log in (NOLOGIN) although default_transaction_read_only is off: set the mode again to finish",
			c.Describe(), access.ErrPartial, strings.Join(out, ", "))
	}
}

// logins reports, for each listed role, whether it may log in; a listed role
// that does not exist is a permanent InvalidConfig error.
func (c *cluster) logins(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	out := map[string]bool{}
	if len(c.cfg.Roles) == 0 {
		return out, nil
	}
	qctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	rows, err := conn.Query(qctx, "SELECT rolname::text, rolcanlogin FROM pg_roles WHERE rolname::text = ANY($1::text[])", c.cfg.Roles)
	if err != nil {
		return nil, c.fail(ctx, "read roles", err)
	}
	var name string
	var login bool
	if _, err := pgx.ForEachRow(rows, []any{&name, &login}, func() error { out[name] = login; return nil }); err != nil {
		return nil, c.fail(ctx, "read roles", err)
	}
	for _, r := range c.cfg.Roles {
		if _, ok := out[r]; !ok {
			return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "%s: role %q (listed in roles) does not exist in this cluster: list the application's login roles", c.Describe(), r)
		}
	}
	return out, nil
}

// SetMode puts the cluster in mode and returns once the mode is in force for
// new sessions and open ones alike.
//
// Read-only: the listed roles become NOLOGIN (in one transaction),
// default_transaction_read_only is set on (ALTER SYSTEM SET) and the
// configuration reloaded, then every client session older than that
// configuration and every session of a listed role is ended: open
// transactions keep the mode they began with. Read-write: the setting is
// reset (ALTER SYSTEM RESET, so that a value from postgresql.conf is left
// alone) and reloaded, the listed roles may log in again, and the sessions
// older than the configuration are ended. On a hot standby read-only is in
// force already (its roles are the primary's and cannot be changed there).
//
// Setting the mode in force is a no-op for the sessions opened under it, so a
// retried or repeated call does not end them again; a call that failed part
// way completes what it began when it is retried.
//
// Errors: a password or role refused is permanent (AuthFailed); a missing
// database or listed role permanent (InvalidConfig); lacking the privilege to
// alter the setting or the roles or to end a session permanent
// (AccessDenied); read-write on a hot standby permanent (InRecovery);
// read-write while postgresql.conf or a role or database setting keeps
// default_transaction_read_only on permanent (InvalidConfig). A server that
// cannot be reached is a transient error wrapping drivers.ErrUnreachable;
// anything else is transient.
func (c *cluster) SetMode(ctx context.Context, mode access.Mode) error {
	if mode != access.ReadOnly && mode != access.ReadWrite {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "%s: set mode %q: want %q or %q", c.Describe(), mode, access.ReadOnly, access.ReadWrite)
	}
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	// This session is new, so it shows what any new session gets.
	st, err := c.state(ctx, conn)
	if err != nil {
		return err
	}
	readOnly := mode == access.ReadOnly
	if !readOnly && st.inRecovery {
		return drivers.Permanentf(ReasonInRecovery, "%s: set read-write: the server is a hot standby (in recovery); it stays read-only until it is promoted", c.Describe())
	}
	// The application's roles are locked out first and let in last, so
	// that none of its sessions ever starts under the mode being left.
	if readOnly && !st.inRecovery {
		if err := c.setLogin(ctx, conn, false); err != nil {
			return err
		}
	}

	// ALTER SYSTEM even when the mode is in force: it is cheap, and it
	// rewrites a file that an interrupted earlier call may have left with the
	// other value, waiting for the next reload. It cannot run in a
	// transaction block, so it is a statement of its own.
	stmt := "ALTER SYSTEM RESET default_transaction_read_only"
	if readOnly {
		stmt = "ALTER SYSTEM SET default_transaction_read_only = on"
	}
	if err := c.exec(ctx, conn, "alter system", stmt); err != nil {
		return err
	}
	// A role or database setting shows in this session but not in others':
	// then only a reload makes sure the server's own value is in force.
	var overridden error
	if st.readOnly != readOnly || !st.fromServer {
		if err := c.exec(ctx, conn, "reload configuration", "SELECT pg_reload_conf()"); err != nil {
			return err
		}
		if st, err = c.waitReload(ctx, st.loaded); err != nil {
			return err
		}
		if st.readOnly != readOnly {
			// The server's value may be in force for everyone else: end
			// the sessions all the same, then say what is in the way.
			overridden = c.overridden(ctx, conn, mode)
		}
	}
	if !readOnly {
		if err := c.setLogin(ctx, conn, true); err != nil {
			return err
		}
	}
	var roles []string
	if readOnly {
		roles = c.cfg.Roles
	}
	if err := c.endSessions(ctx, conn, st.loaded, roles); err != nil {
		return err
	}
	return overridden
}

// setLogin lets the listed roles log in, or not, in one transaction, which
// asks to be read-write: the cluster's default may be read-only already.
func (c *cluster) setLogin(ctx context.Context, conn *pgx.Conn, login bool) error {
	if len(c.cfg.Roles) == 0 {
		return nil
	}
	if _, err := c.logins(ctx, conn); err != nil {
		return err
	}
	opt := "NOLOGIN"
	if login {
		opt = "LOGIN"
	}
	var b strings.Builder
	b.WriteString("BEGIN READ WRITE;")
	for _, r := range c.cfg.Roles {
		fmt.Fprintf(&b, " ALTER ROLE %s %s;", pgx.Identifier{r}.Sanitize(), opt)
	}
	b.WriteString(" COMMIT")
	if err := c.exec(ctx, conn, "alter roles "+strings.Join(c.cfg.Roles, ", ")+" "+opt, b.String()); err != nil {
		// A failed statement leaves the transaction aborted; the
		// connection is closed by the caller, which rolls it back.
		return err
	}
	return nil
}

// state is what a session was given when it started.
type state struct {
	readOnly   bool      // default_transaction_read_only
	fromServer bool      // readOnly is the server's value, not a role's or a database's
	inRecovery bool      // a hot standby
	loaded     time.Time // when the server last loaded its configuration files
}

func (c *cluster) state(ctx context.Context, conn *pgx.Conn) (state, error) {
	var st state
	err := c.queryRow(ctx, conn, "read mode",
		`SELECT setting::bool, source IN ('default', 'configuration file', 'command line'), pg_is_in_recovery(), pg_conf_load_time()
		   FROM pg_settings WHERE name = 'default_transaction_read_only'`).
		Scan(&st.readOnly, &st.fromServer, &st.inRecovery, &st.loaded)
	return st, err
}

// waitReload waits until a new session shows a configuration loaded after
// before: pg_reload_conf only signals the server, which reloads in its own time.
func (c *cluster) waitReload(ctx context.Context, before time.Time) (state, error) {
	deadline := time.Now().Add(c.cfg.Timeout)
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		conn, err := c.connect(ctx)
		if err != nil {
			return state{}, err
		}
		st, err := c.state(ctx, conn)
		conn.Close(context.Background())
		if err != nil {
			return state{}, err
		}
		if st.loaded.After(before) {
			return st, nil
		}
		if time.Now().After(deadline) {
			return state{}, fmt.Errorf("%s: the server has not reloaded its configuration after %s: is a configuration file invalid? (see the server log)", c.Describe(), c.cfg.Timeout)
		}
		if err := sleep(ctx, pause); err != nil {
			return state{}, fmt.Errorf("%s: wait for the configuration reload: %w", c.Describe(), err)
		}
	}
}

// overridden explains why a reloaded configuration does not give new sessions
// the mode: another source of default_transaction_read_only wins over
// postgresql.auto.conf.
func (c *cluster) overridden(ctx context.Context, conn *pgx.Conn, mode access.Mode) error {
	var setting, source, file string
	var line int
	err := c.queryRow(ctx, conn, "read setting source",
		`SELECT setting, source, coalesce(sourcefile, ''), coalesce(sourceline, 0)
		   FROM pg_settings WHERE name = 'default_transaction_read_only'`).
		Scan(&setting, &source, &file, &line)
	if err != nil {
		return err
	}
	var where string
	switch {
	case source == "configuration file" && file != "" && !strings.HasSuffix(file, "postgresql.auto.conf"):
		where = fmt.Sprintf("%s line %d, which ALTER SYSTEM does not override; remove it there", file, line)
	case source == "command line":
		where = "the server's command line (postgres -c), which ALTER SYSTEM does not override"
	case source == "user":
		where = fmt.Sprintf("ALTER ROLE %s SET; reset it", c.cfg.User)
	case source == "database":
		where = fmt.Sprintf("ALTER DATABASE %s SET; reset it", c.cfg.Database)
	case source == "database user":
		where = fmt.Sprintf("ALTER ROLE %s IN DATABASE %s SET; reset it", c.cfg.User, c.cfg.Database)
	default:
		return fmt.Errorf("%s: set %s: new sessions still get default_transaction_read_only = %s (source: %s)", c.Describe(), mode, setting, source)
	}
	return drivers.Permanentf(drivers.ReasonInvalidConfig, "%s: set %s: new sessions still get default_transaction_read_only = %s from %s", c.Describe(), mode, setting, where)
}

// endSessions ends every other client session that started before the
// configuration loaded at loaded, and every session of the given roles, and
// waits until they are gone. A session that started later was given the
// configuration in force. A role's session that started while the role was
// being locked out is caught by looking again, a few times.
func (c *cluster) endSessions(ctx context.Context, conn *pgx.Conn, loaded time.Time, roles []string) error {
	var seesAll bool
	if err := c.queryRow(ctx, conn, "check privileges", "SELECT pg_has_role('pg_read_all_stats', 'USAGE')").Scan(&seesAll); err != nil {
		return err
	}
	if !seesAll {
		return drivers.Permanentf(drivers.ReasonAccessDenied, "%s: end open sessions: user %s cannot see other users' sessions: needs superuser, or pg_read_all_stats and pg_signal_backend", c.Describe(), c.cfg.User)
	}
	if roles == nil {
		roles = []string{}
	}
	for round := 0; ; round++ {
		qctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		rows, err := conn.Query(qctx,
			`SELECT pid FROM pg_stat_activity
			  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
			    AND (backend_start <= $1 OR usename::text = ANY($2::text[]))`, loaded, roles)
		if err != nil {
			cancel()
			return c.fail(ctx, "list open sessions", err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		cancel()
		if err != nil {
			return c.fail(ctx, "list open sessions", err)
		}
		if len(pids) == 0 {
			return nil
		}
		if round == 3 {
			return fmt.Errorf("%s: sessions of roles %s keep opening after they were made NOLOGIN: does another superuser let them in again?", c.Describe(), strings.Join(roles, ", "))
		}
		if err := c.terminate(ctx, conn, pids); err != nil {
			return err
		}
	}
}

// terminate ends the sessions pids and waits until they are gone.
func (c *cluster) terminate(ctx context.Context, conn *pgx.Conn, pids []int32) error {
	list := make([]string, len(pids))
	for i, pid := range pids {
		// A session that ended meanwhile makes this return false: fine.
		if err := c.exec(ctx, conn, "end session "+strconv.Itoa(int(pid)), "SELECT pg_terminate_backend($1)", pid); err != nil {
			return err
		}
		list[i] = strconv.Itoa(int(pid))
	}
	// pg_terminate_backend only signals: a transaction is over once its
	// session is gone.
	deadline := time.Now().Add(c.cfg.Timeout)
	for pause := 5 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		var left int
		if err := c.queryRow(ctx, conn, "wait for sessions to end",
			"SELECT count(*) FROM pg_stat_activity WHERE pid IN ("+strings.Join(list, ",")+")").Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d sessions signalled to end are still open after %s", c.Describe(), left, len(pids), c.cfg.Timeout)
		}
		if err := sleep(ctx, pause); err != nil {
			return fmt.Errorf("%s: wait for sessions to end: %w", c.Describe(), err)
		}
	}
}

func (c *cluster) connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, c.conn)
	if err != nil {
		return nil, c.fail(ctx, "connect", err)
	}
	return conn, nil
}

func (c *cluster) exec(ctx context.Context, conn *pgx.Conn, op, sql string, args ...any) error {
	ctx2, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if _, err := conn.Exec(ctx2, sql, args...); err != nil {
		return c.fail(ctx, op, err)
	}
	return nil
}

type row struct {
	c    *cluster
	ctx  context.Context
	conn *pgx.Conn
	op   string
	sql  string
}

func (c *cluster) queryRow(ctx context.Context, conn *pgx.Conn, op, sql string) row {
	return row{c: c, ctx: ctx, conn: conn, op: op, sql: sql}
}

func (r row) Scan(dest ...any) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.c.cfg.Timeout)
	defer cancel()
	if err := r.conn.QueryRow(ctx, r.sql).Scan(dest...); err != nil {
		return r.c.fail(r.ctx, r.op, err)
	}
	return nil
}

// fail classifies err from operation op; ctx is the caller's, to tell its end
// from a timeout of the driver's own.
func (c *cluster) fail(ctx context.Context, op string, err error) error {
	prefix := c.Describe() + ": " + op
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// The server's message names the user and the database, never the password.
		switch pgErr.Code {
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return drivers.Permanent(drivers.ReasonAuth, fmt.Errorf("%s: %w", prefix, pgErr))
		case "3D000", "42704": // invalid_catalog_name, undefined_object (a role)
			return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %w", prefix, pgErr))
		case "42501": // insufficient_privilege
			return drivers.Permanent(drivers.ReasonAccessDenied, fmt.Errorf("%s: %w: user %s needs superuser, or the ALTER SYSTEM privilege on default_transaction_read_only, CREATEROLE for the roles, and pg_read_all_stats and pg_signal_backend to end sessions", prefix, pgErr, c.cfg.User))
		}
		return fmt.Errorf("%s: %w", prefix, pgErr)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: %w", prefix, ctx.Err())
	}
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalidErr x509.CertificateInvalidError
	)
	if errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalidErr) ||
		strings.Contains(err.Error(), "server refused TLS connection") {
		return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %w (sslmode %s)", prefix, err, c.cfg.SSLMode))
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) && unreachable(err) {
		return fmt.Errorf("%s: %w: %w", prefix, drivers.ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", prefix, err)
}

// unreachable reports whether a connection attempt failed before a server
// answered: no route, refused, no such host, or no answer in time.
func unreachable(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	return pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
