package dev

import (
	"fmt"
	"os"
	"regexp"
	"strings"
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

	// Plan db protects the clusters stack.sh makes for it, on its ports and
	// paths, and ships their WAL; the secondary's is started by a restore.
	stack, err := os.ReadFile("stack.sh")
	if err != nil {
		t.Fatal(err)
	}
	db, err := cfg.Plan("db")
	if err != nil {
		t.Fatal(err)
	}
	if !db.ShipsWAL() {
		t.Error("plan db does not ship WAL")
	}
	for _, site := range []string{"primary", "secondary"} {
		src := db.Source[site]
		m := regexp.MustCompile(`(?m)^PGDB_PORT_` + site + `=(\d+)$`).FindSubmatch(stack)
		if m == nil || fmt.Sprint(src.Port) != string(m[1]) {
			t.Errorf("plan db at %s: port %d, stack.sh PGDB_PORT_%s %q", site, src.Port, site, m)
		}
		if src.Driver != "postgres" || src.Path != "/var/tmp/drorch-dev/pgdb-"+site+"/data" ||
			!strings.Contains(src.Options, "/var/tmp/drorch-dev/pgdb-"+site+"/sock") {
			t.Errorf("plan db at %s: %+v; want the cluster stack.sh makes in $DEV/pgdb-%s", site, src, site)
		}
	}
	if a := db.Source["secondary"].AfterRestore; a != "start" {
		t.Errorf("plan db's standby afterRestore %q: the demo's failover starts it", a)
	}
	if !strings.Contains(string(stack), "wal-push --plan db --site primary") {
		t.Error("stack.sh does not archive the primary's WAL into plan db")
	}
}
