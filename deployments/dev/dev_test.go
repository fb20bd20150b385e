package dev

import (
	"os"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/drorch/drorch/internal/config"
)

// The embedded config is valid with the secrets the Taskfile exports, and
// describes the switching story the demo tells.
func TestConfig(t *testing.T) {
	b, err := os.ReadFile("../../Taskfile.yml")
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Env map[string]string `yaml:"env"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatalf("Taskfile.yml: %v", err)
	}
	for k, v := range tf.Env {
		t.Setenv(k, v)
	}
	cfg, err := config.Parse(Name, Config)
	if err != nil {
		t.Fatalf("with the Taskfile's env: %v", err)
	}
	p, err := cfg.Plan("files")
	if err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{"primary", "secondary"} {
		if a := p.Access[site]; len(a) != 1 || a[0].Driver != "postgres" {
			t.Errorf("access at %s: %+v", site, a)
		}
	}
	if len(p.DNS) != 1 || p.DNS[0].Values["primary"][0] == p.DNS[0].Values["secondary"][0] {
		t.Errorf("dns: %+v", p.DNS)
	}
	if p.Failback.AutoComplete {
		t.Error("failback completes by itself: the demo sends complete")
	}
}
