// Package postgres_test checks the example deployment config of a postgres
// plan (drorch.yaml here) against the config rules.
package postgres_test

import (
	"testing"

	"github.com/drorch/drorch/internal/config"
)

func TestExampleConfigParses(t *testing.T) {
	cfg, err := config.Load("drorch.yaml", config.WithoutSecrets())
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Plans["db"].Source["secondary"]; s.Driver != "postgres" || s.AfterRestore != "start" {
		t.Fatalf("secondary source = %+v", s)
	}
}
