package config

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Defaults of a postgres source.
const (
	DefaultPostgresMode         = "physical"
	DefaultPostgresBin          = "/usr/lib/postgresql/15/bin"
	DefaultPostgresPort         = 5432
	DefaultPostgresUser         = "postgres"
	DefaultPostgresDatabase     = "postgres"
	DefaultPostgresSSLMode      = "prefer"
	DefaultPostgresAfterRestore = "start"
	DefaultPostgresStartTimeout = time.Hour

	// PostgresLogical is the mode of a postgres source that protects one
	// database with pg_dump and pg_restore instead of the cluster's data
	// directory and WAL.
	PostgresLogical = "logical"
)

// postgresFields are the keys of a source only the postgres driver takes.
var postgresFields = []string{"mode", "host", "port", "user", "password", "database", "sslmode", "bin", "afterRestore", "options", "startTimeout"}

var (
	postgresModes  = []string{DefaultPostgresMode, PostgresLogical}
	postgresAfter  = []string{"start", "stop"}
	postgresSSLMod = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
)

// validatePostgres checks the postgres settings of a source and fills in the
// defaults of those left out; a source of another driver must set none.
func (s *Source) validatePostgres(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	if s.Driver != "postgres" {
		v := reflect.ValueOf(*s)
		for _, fd := range fieldsOf(v.Type()) {
			if slices.Contains(postgresFields, fd.key) && !v.Field(fd.index).IsZero() {
				d.errorf(f(fd.key), "a setting of the postgres driver, not of %q", s.Driver)
			}
		}
		return
	}
	if s.Mode == "" {
		s.Mode = DefaultPostgresMode
	}
	if s.Mode == "logical" {
		s.validateLogical(d, path) // before the defaults: it refuses what physical mode alone uses
	}
	if s.Bin == "" {
		s.Bin = DefaultPostgresBin
	}
	if s.Port == 0 {
		s.Port = DefaultPostgresPort
	}
	if s.User == "" {
		s.User = DefaultPostgresUser
	}
	if s.Database == "" && s.Mode != "logical" {
		s.Database = DefaultPostgresDatabase
	}
	if s.SSLMode == "" {
		s.SSLMode = DefaultPostgresSSLMode
	}
	if s.AfterRestore == "" {
		s.AfterRestore = DefaultPostgresAfterRestore
	}
	if s.StartTimeout == 0 {
		s.StartTimeout = DefaultPostgresStartTimeout
	}
	if !slices.Contains(postgresModes, s.Mode) {
		d.errorf(f("mode"), "must be physical (a base backup with the WAL) or logical (pg_dump of one database), got %q", s.Mode)
	}
	if s.Host == "" {
		d.errorf(f("host"), "required: the host name, IP address or unix socket directory of the server (pg_basebackup and the restore connect to it)")
	}
	if s.Port < 1 || s.Port > 65535 {
		d.errorf(f("port"), "must be 1 to 65535, got %d", s.Port)
	}
	if s.Password.Ref() == "" && !strings.HasPrefix(s.Host, "/") {
		d.errorf(f("password"), `required for a TCP connection: a reference "env:NAME" or "file:PATH"`)
	}
	if !slices.Contains(postgresSSLMod, s.SSLMode) {
		d.errorf(f("sslmode"), "must be one of %s, got %q", strings.Join(postgresSSLMod, ", "), s.SSLMode)
	}
	if !filepath.IsAbs(s.Bin) {
		d.errorf(f("bin"), "must be the absolute path of the directory holding pg_basebackup and pg_ctl (pg_dump and pg_restore in logical mode), got %q", s.Bin)
	}
	if !slices.Contains(postgresAfter, s.AfterRestore) {
		d.errorf(f("afterRestore"), "must be start (start the server and wait until it has recovered) or stop (leave it for the operator), got %q", s.AfterRestore)
	}
	if strings.ContainsAny(s.Options, "\n\r") {
		d.errorf(f("options"), "must be one line of server options, such as \"-k /run/postgresql\"")
	}
	if s.StartTimeout < time.Second {
		d.errorf(f("startTimeout"), "must be at least 1s, got %s", s.StartTimeout)
	}
}

// Logical reports whether s is a postgres source in logical mode: one
// database, dumped with pg_dump and restored with pg_restore, a stream and
// not a tree, with no data directory and no WAL.
func (s *Source) Logical() bool { return s.Driver == "postgres" && s.Mode == PostgresLogical }

// validateLogical checks what logical mode asks of a postgres source, before
// the defaults are filled in: the database is named (a dump of the default
// "postgres" database, empty on most servers, would succeed every night and
// protect nothing), and the settings only physical mode uses are left out.
func (s *Source) validateLogical(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	if s.Database == "" {
		d.errorf(f("database"), "required in logical mode: the one database pg_dump backs up (at the primary) or pg_restore restores into (at a standby)")
	} else if strings.ContainsAny(s.Database, "\x00\n") {
		d.errorf(f("database"), "must be a database name, got %q", s.Database)
	}
	if s.Path != "" {
		d.errorf(f("path"), "is not used in logical mode (the data is pg_dump's stream, not a data directory); leave it out")
	}
	if s.AfterRestore != "" {
		d.errorf(f("afterRestore"), "is for physical mode only: a logical restore writes into a running server")
	}
	if s.Options != "" {
		d.errorf(f("options"), "is for physical mode only: a logical restore starts no server")
	}
	if s.StartTimeout != 0 {
		d.errorf(f("startTimeout"), "is for physical mode only: a logical restore starts no server")
	}
}

// validatePostgresModes checks the postgres sources of a plan together: a
// logical dump restores only into a logical source and a base backup only
// into a data directory, and a logical plan has no WAL to ship.
func (p *Plan) validatePostgresModes(d *decoder, path string) {
	var logical, physical []string
	for _, site := range sortedKeys(p.Source) {
		switch s := p.Source[site]; {
		case s.Logical():
			logical = append(logical, site)
		case s.Driver == "postgres":
			physical = append(physical, site)
		}
	}
	if len(logical) > 0 && len(physical) > 0 {
		d.errorf(join(path, "source"), "mixes postgres modes: logical at %s, physical at %s; a pg_dump restores only into a database and a base backup only into a data directory: give every site the same mode",
			strings.Join(logical, ", "), strings.Join(physical, ", "))
	}
	if len(logical) > 0 && p.WAL.Ship == "on" {
		d.errorf(join(join(path, "wal"), "ship"), "on: a logical postgres source (pg_dump) has no WAL to ship; leave it out or set off")
	}
}
