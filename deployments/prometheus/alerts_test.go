// Package prometheus holds drorch's Prometheus alert rules and scrape
// config (docs/observability.md); its test checks them.
package prometheus

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The rules pass promtool's checks and its unit tests
// (drorch-alerts.test.yml: each alert fires when it should, and the RPO
// alert's threshold is each plan's own). Without promtool (Debian package
// prometheus) they are checked structurally, except in CI, which installs it.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is not installed: run `go tool task tools:debian` (it installs the Debian package prometheus)")
		}
		t.Log("promtool not found: checking the rules' structure only")
		checkStructure(t)
		return
	}
	for _, args := range [][]string{
		{"check", "rules", "drorch-alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "drorch-alerts.test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	checkStructure(t)
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func checkStructure(t *testing.T) {
	b, err := os.ReadFile("drorch-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("drorch-alerts.yml: %v", err)
	}
	alerts := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %q: wants alert, expr, labels.severity and annotations.summary", r.Alert)
			}
			alerts[r.Alert] = r.Expr
		}
	}
	for name, uses := range map[string]string{
		"DrorchRPOBreached":             "drorch_rpo_objective_seconds", // the threshold is the plan's objective
		"DrorchRecoveryPointAgeMissing": "drorch_recovery_point_age_seconds",
		"DrorchWorkerMetricsDown":       "up{",
		"DrorchSchedulePausedTooLong":   "drorch_schedule_paused_since_timestamp_seconds",
		"DrorchGCStale":                 "drorch_gc_last_success_timestamp_seconds",
	} {
		if !strings.Contains(alerts[name], uses) {
			t.Errorf("alert %s: missing, or its expression does not use %s: %q", name, uses, alerts[name])
		}
	}
}
