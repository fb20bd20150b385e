package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestParseExecSource(t *testing.T) {
	setSecrets(t)
	doc := strings.Replace(valid, withSourceHooks, `primary:
        driver: exec
        backup:
          command: [qemu-img, convert, -O, raw, /var/lib/libvirt/images/vm.qcow2, /dev/stdout]
          timeout: 2h
          env: {LANG: C}
          secretEnv: {PGPASSWORD: env:DRORCH_FILES_KEY}
        restore: {command: [sh, -c, 'cat > /restore/vm.raw']}`, 1)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	src := cfg.Plans["files"].Source["primary"]
	if src.Driver != "exec" || src.Backup == nil || src.Backup.Command[0] != "qemu-img" || src.Backup.Timeout != 2*time.Hour ||
		src.Backup.Env["LANG"] != "C" || src.Backup.SecretEnv["PGPASSWORD"].Value() == "" {
		t.Fatalf("backup = %+v", src.Backup)
	}
	if src.Restore == nil || src.Restore.Timeout != DefaultExecTimeout || src.Restore.Command[2] != "cat > /restore/vm.raw" {
		t.Fatalf("restore = %+v", src.Restore)
	}
	// The secret's value never prints.
	if s := fmt.Sprintf("%v %+v %s", *src, *src, src.Backup); strings.Contains(s, src.Backup.SecretEnv["PGPASSWORD"].Value()) {
		t.Fatalf("the source prints its secret env: %s", s)
	}
}

func TestParseExecSourceErrors(t *testing.T) {
	setSecrets(t)
	cases := []struct{ source, want string }{
		{`{driver: exec}`, "plans.files.source.primary.backup: required for driver: exec"},
		{`{driver: exec, path: /srv/data, backup: {command: [cat]}}`, "plans.files.source.primary.path: is not used by driver: exec"},
		{`{driver: exec, backup: {}}`, "plans.files.source.primary.backup.command: required"},
		{`{driver: exec, backup: {command: [""]}}`, "plans.files.source.primary.backup.command: the command is empty"},
		{`{driver: exec, backup: {command: [cat], timeout: 10ms}}`, "plans.files.source.primary.backup.timeout: must be at least 1s"},
		{`{driver: exec, backup: {command: [cat], env: {DRORCH_PLAN: x}}}`, "plans.files.source.primary.backup.env.DRORCH_PLAN: DRORCH_* variables are set by drorch"},
		{`{driver: exec, backup: {command: [cat], env: {"A B": x}}}`, "plans.files.source.primary.backup.env.A B: not a valid environment variable name"},
		{`{driver: exec, backup: {command: [cat], secretEnv: {PW: hunter2}}}`, "plans.files.source.primary.backup.secretEnv.PW: must be a reference"},
		{`{driver: exec, backup: {command: [cat]}, restore: {command: []}}`, "plans.files.source.primary.restore.command: required"},
		{`{driver: exec, backup: {command: [cat], stdin: x}}`, "plans.files.source.primary.backup.stdin: unknown key"},
		{`{driver: dir, path: /srv/data, backup: {command: [cat]}}`, "plans.files.source.primary.backup: is for driver: exec only"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			doc := strings.Replace(valid, withSourceHooks, `primary: `+tc.source, 1)
			_, err := Parse("drorch.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "drorch.yaml:") {
				t.Fatalf("err = %v, want the file and line", err)
			}
		})
	}
}
