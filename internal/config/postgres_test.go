package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParsePostgresSource(t *testing.T) {
	setSecrets(t)
	t.Setenv("PG_PASSWORD", "s3cret")
	doc := strings.Replace(valid, withSourceHooks, `primary: {driver: postgres, path: /var/lib/postgresql/15/main, host: db.example, password: env:PG_PASSWORD, options: "-k /run/postgresql"}`, 1)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Plans["files"].Source["primary"]
	if s.Mode != "physical" || s.Port != 5432 || s.User != "postgres" || s.Database != "postgres" || s.SSLMode != "prefer" ||
		s.Bin != DefaultPostgresBin || s.AfterRestore != "start" || s.StartTimeout != time.Hour || s.Password.Value() != "s3cret" {
		t.Fatalf("postgres source with defaults = %+v", s)
	}
	if strings.Contains(fmt.Sprintf("%v %+v", s, *s), "s3cret") {
		t.Fatal("the source prints its password")
	}
}

func TestParsePostgresSourceErrors(t *testing.T) {
	setSecrets(t)
	t.Setenv("PG_PASSWORD", "s3cret")
	cases := []struct{ source, want string }{
		{`{driver: postgres, path: /pg, password: env:PG_PASSWORD}`, "plans.files.source.primary.host: required"},
		{`{driver: postgres, path: /pg, host: h}`, "plans.files.source.primary.password: required for a TCP connection"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, mode: logical}`, "plans.files.source.primary.mode: logical (pg_dump of one database) is not supported yet"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, mode: dump}`, "plans.files.source.primary.mode: must be physical"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, afterRestore: promote}`, "plans.files.source.primary.afterRestore: must be start"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, port: 70000}`, "plans.files.source.primary.port: must be 1 to 65535"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, bin: bin}`, "plans.files.source.primary.bin: must be the absolute path"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, sslmode: maybe}`, "plans.files.source.primary.sslmode: must be one of"},
		{`{driver: dir, path: /srv/data, host: h}`, `plans.files.source.primary.host: a setting of the postgres driver, not of "dir"`},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			doc := strings.Replace(valid, withSourceHooks, `primary: `+tc.source, 1)
			_, err := Parse("drorch.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "drorch.yaml:") {
				t.Fatalf("err = %v, want it to name the file and line", err)
			}
		})
	}
	// A socket directory needs no password (peer or trust authentication).
	doc := strings.Replace(valid, withSourceHooks, `primary: {driver: postgres, path: /pg, host: /run/postgresql}`, 1)
	if _, err := Parse("drorch.yaml", []byte(doc)); err != nil {
		t.Fatalf("a postgres source on a unix socket without a password: %v", err)
	}
}
