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
		{`{driver: postgres, host: h, password: env:PG_PASSWORD, mode: logical}`, "plans.files.source.primary.database: required in logical mode"},
		{`{driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD, mode: logical, database: app}`, "plans.files.source.primary.path: is not used in logical mode"},
		{`{driver: postgres, host: h, password: env:PG_PASSWORD, mode: logical, database: app, afterRestore: stop}`, "plans.files.source.primary.afterRestore: is for physical mode only"},
		{`{driver: postgres, host: h, password: env:PG_PASSWORD, mode: logical, database: app, startTimeout: 1m}`, "plans.files.source.primary.startTimeout: is for physical mode only"},
		{`{driver: postgres, host: h, mode: logical, database: app}`, "plans.files.source.primary.password: required for a TCP connection"},
		{`{driver: postgres, host: h, password: env:PG_PASSWORD, database: app}`, "plans.files.source.primary.path: required"},
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

// Logical mode protects one named database: no data directory, no WAL.
func TestParsePostgresLogicalSource(t *testing.T) {
	setSecrets(t)
	t.Setenv("PG_PASSWORD", "s3cret")
	doc := edit(t,
		`primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}`, `primary: {driver: postgres, mode: logical, host: db.example, password: env:PG_PASSWORD, database: app}`,
		`secondary: {driver: dir, path: /srv/data-standby}`, `secondary: {driver: postgres, mode: logical, host: /run/postgresql, database: app_standby}`)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Plans["files"]
	s := p.Source["primary"]
	if !s.Logical() || s.Database != "app" || s.Path != "" || s.Port != 5432 || s.User != "postgres" || s.SSLMode != "prefer" || s.Bin != DefaultPostgresBin {
		t.Fatalf("logical source with defaults = %+v", s)
	}
	if sb := p.Source["secondary"]; !sb.Logical() || sb.Database != "app_standby" {
		t.Fatalf("logical standby = %+v", sb)
	}
	if p.ShipsWAL() {
		t.Error("a plan of logical sources ships WAL (wal.ship auto): pg_dump has none")
	}
	// A physical source still ships by default, and takes the default database.
	phys := edit(t, `primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}`, `primary: {driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD}`)
	cfg, err = Parse("drorch.yaml", []byte(phys))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Plans["files"]; !p.ShipsWAL() || p.Source["primary"].Logical() || p.Source["primary"].Database != "postgres" {
		t.Errorf("a physical postgres plan: ships WAL %v, source %+v", p.ShipsWAL(), p.Source["primary"])
	}
}

func TestParsePostgresLogicalPlanErrors(t *testing.T) {
	setSecrets(t)
	t.Setenv("PG_PASSWORD", "s3cret")
	logical := `primary: {driver: postgres, mode: logical, host: h, password: env:PG_PASSWORD, database: app}`
	cases := []struct {
		pairs []string
		want  string
	}{
		{[]string{`secondary: {driver: dir, path: /srv/data-standby}`, `secondary: {driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD}`},
			"plans.files.source: mixes postgres modes: logical at primary, physical at secondary"},
		{[]string{`    encryption:`, "    wal: {ship: on}\n    encryption:"},
			"plans.files.wal.ship: on: a logical postgres source (pg_dump) has no WAL to ship"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			doc := edit(t, append([]string{`primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}`, logical}, tc.pairs...)...)
			_, err := Parse("drorch.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
