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
)

// postgresFields are the keys of a source only the postgres driver takes.
var postgresFields = []string{"mode", "host", "port", "user", "password", "database", "sslmode", "bin", "afterRestore", "options", "startTimeout"}

var (
	postgresModes  = []string{"physical", "logical"}
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
	if s.Bin == "" {
		s.Bin = DefaultPostgresBin
	}
	if s.Port == 0 {
		s.Port = DefaultPostgresPort
	}
	if s.User == "" {
		s.User = DefaultPostgresUser
	}
	if s.Database == "" {
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
	switch {
	case !slices.Contains(postgresModes, s.Mode):
		d.errorf(f("mode"), "must be physical (a base backup with the WAL) or logical, got %q", s.Mode)
	case s.Mode == "logical":
		d.errorf(f("mode"), "logical (pg_dump of one database) is not supported yet; use physical")
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
		d.errorf(f("bin"), "must be the absolute path of the directory holding pg_basebackup and pg_ctl, got %q", s.Bin)
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
