package activities

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/internal/testenv"
)

// A physical postgres standby never counts as holding a point: a failover
// must recover it to the shipped WAL, not open it as it stands.
func TestStandbyMarkOfAPostgresStandby(t *testing.T) {
	t.Setenv("MARK_PG", "s3cret")
	t.Setenv("MARK_KEY", "k")
	const doc = `
sites:
  a: {store: {driver: s3, endpoint: 127.0.0.1:9, bucket: drorch, accessKey: env:MARK_KEY, secretKey: env:MARK_KEY, insecure: true}}
  b: {store: {driver: s3, endpoint: 127.0.0.1:9, bucket: drorch, accessKey: env:MARK_KEY, secretKey: env:MARK_KEY, insecure: true}}
plans:
  db:
    primary: a
    secondary: b
    source:
      a: {driver: postgres, path: /pg/a, host: 127.0.0.1, password: env:MARK_PG}
      b: {driver: postgres, path: /pg/b, host: 127.0.0.1, password: env:MARK_PG}
  files:
    primary: a
    secondary: b
    source:
      a: {driver: dir, path: /srv/a}
      b: {driver: dir, path: /srv/b}
`
	cfg, err := config.Parse("mark.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, nil, zerolog.Nop())
	if got := a.standbyMark("db", "b", "2026-11-30T10:00:00.000Z-1234abcd"); got != "" {
		t.Errorf("postgres standby marked as holding %q", got)
	}
	if got := a.standbyMark("files", "b", "p1"); got != "p1" {
		t.Errorf("dir standby: got %q, want p1", got)
	}
}

// A restored server sees only the secrets its wal-fetch and wal-push need.
func TestServerEnvHoldsOnlyTheSecretsItNeeds(t *testing.T) {
	t.Setenv("SRV_A_KEY", "a-key")
	t.Setenv("SRV_B_KEY", "b-key")
	t.Setenv("SRV_PG", "pg-pass")
	t.Setenv("PGPASSWORD", "stray")
	const doc = `
sites:
  a: {store: {driver: s3, endpoint: 127.0.0.1:9, bucket: drorch, accessKey: env:SRV_A_KEY, secretKey: env:SRV_A_KEY, insecure: true}}
  b: {store: {driver: s3, endpoint: 127.0.0.1:9, bucket: drorch, accessKey: env:SRV_B_KEY, secretKey: env:SRV_B_KEY, insecure: true}}
plans:
  db:
    primary: a
    secondary: b
    source:
      a: {driver: postgres, path: /pg/a, host: 127.0.0.1, password: env:SRV_PG}
      b: {driver: postgres, path: /pg/b, host: 127.0.0.1, password: env:SRV_PG}
`
	cfg, err := config.Parse("env.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(New(cfg, nil, zerolog.Nop()).serverEnv("db", "b"), "\n")
	if !strings.Contains(env, "SRV_B_KEY=b-key") {
		t.Errorf("the site's store key is missing:\n%s", env)
	}
	for _, leak := range []string{"a-key", "pg-pass", "stray"} {
		if strings.Contains(env, leak) {
			t.Errorf("the server's environment holds %q:\n%s", leak, env)
		}
	}
}

// The active site is read from the site's own epoch.json: the primary until
// a switch records another.
func TestAtActiveSite(t *testing.T) {
	m := testenv.StartMinIO(t)
	t.Setenv("ACT_ACCESS", m.AccessKey)
	t.Setenv("ACT_SECRET", m.SecretKey)
	t.Setenv("ACT_PG", "pg")
	var doc strings.Builder
	doc.WriteString("sites:\n")
	for _, site := range []string{"primary", "secondary"} {
		fmt.Fprintf(&doc, "  %s:\n    store: {driver: s3, endpoint: %s, bucket: %s, accessKey: env:ACT_ACCESS, secretKey: env:ACT_SECRET, insecure: true}\n", site, m.Endpoint, site)
	}
	doc.WriteString("plans:\n  db:\n    primary: primary\n    secondary: secondary\n    source:\n" +
		"      primary: {driver: postgres, path: /pg/a, host: 127.0.0.1, password: env:ACT_PG}\n" +
		"      secondary: {driver: postgres, path: /pg/b, host: 127.0.0.1, password: env:ACT_PG}\n")
	cfg, err := config.Parse("act.yaml", []byte(doc.String()))
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, nil, zerolog.Nop())
	ctx := context.Background()
	for _, site := range []string{"primary", "secondary"} {
		if _, err := a.PrepareSite(ctx, PrepareSiteInput{Plan: "db", Site: site}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(site string, want bool) {
		t.Helper()
		if got, err := a.atActiveSite(ctx, "db", site); err != nil || got != want {
			t.Errorf("atActiveSite(%s) = %v, %v; want %v", site, got, err, want)
		}
	}
	check("primary", true)
	check("secondary", false)
	r, err := a.repo("db", "secondary")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpdateEpoch(ctx, func(e *repo.Epoch) error {
		e.Epoch, e.Active, e.Updated = e.Epoch+1, "secondary", time.Now().UTC()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	check("secondary", true)
}
