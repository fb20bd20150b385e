package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/workflows"
)

// A source's pre hooks run in order before the source is read, and its post
// hooks after the backup, also a failed one: each case rewrites the hook
// scripts and reads the log they append to.
func TestSourceHooksRunAroundTheBackup(t *testing.T) {
	script := func(s *stack, name string) string { return filepath.Join(s.dir, name+".sh") }
	s := newStack(t, stackOptions{hooks: func(s *stack) string {
		return "{pre: [{exec: [sh, " + script(s, "pre1") + "]}, {exec: [sh, " + script(s, "pre2") + "], timeout: 1s}]," +
			" post: [{exec: [sh, " + script(s, "post1") + "]}, {exec: [sh, " + script(s, "post2") + "]}]}"
	}})
	logPath := filepath.Join(s.dir, "hooks.log")
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(script(s, name), []byte(body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logged := func() string {
		t.Helper()
		b, err := os.ReadFile(logPath)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		os.Remove(logPath)
		return string(b)
	}
	logLine := `echo "$(basename "$0" .sh) $DRORCH_PLAN $DRORCH_SITE $DRORCH_PHASE $DRORCH_BACKUP_OK" >> ` + logPath
	if err := os.WriteFile(filepath.Join(s.source("primary"), "data.txt"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startWorker()

	t.Run("order", func(t *testing.T) {
		// pre2 writes a file into the source: the restore point holds it
		// only if the pre hooks ran before the source was read.
		write("pre1", logLine)
		write("pre2", logLine+"\necho frozen > "+filepath.Join(s.source("primary"), "frozen.txt"))
		write("post1", logLine)
		write("post2", logLine+"\necho 'thaw: device busy' >&2; exit 4")
		res := s.backup()
		want := "pre1 files primary pre \npre2 files primary pre \npost1 files primary post 1\npost2 files primary post 1\n"
		if got := logged(); got != want {
			t.Fatalf("hooks ran as\n%s\nwant\n%s", got, want)
		}
		if len(res.HookWarnings) != 1 || !strings.Contains(res.HookWarnings[0], "post hook 2") || !strings.Contains(res.HookWarnings[0], "thaw: device busy") {
			t.Fatalf("hook warnings = %q, want post hook 2's failure with its output", res.HookWarnings)
		}
		// The operator sees the warning.
		out, errOut, err := s.drorch("backup", "--plan", plan, "--wait")
		if err != nil || !strings.Contains(out, "warning") || !strings.Contains(out, "post hook 2 at primary") || !strings.Contains(out, "thaw: device busy") {
			t.Fatalf("drorch backup: %v\n%s\n%s\nwant the post hook's warning", err, out, errOut)
		}
		logged()
		to := filepath.Join(s.dir, "restored")
		s.restore("primary", to)
		if b, err := os.ReadFile(filepath.Join(to, "frozen.txt")); err != nil || string(b) != "frozen\n" {
			t.Fatalf("the restore point lacks the pre hook's file: %q, %v", b, err)
		}
	})

	t.Run("failing pre hook", func(t *testing.T) {
		write("pre2", logLine+"\necho \"volume busy, key $E2E_PRIMARY_SECRET\" >&2; exit 3")
		write("post2", logLine)
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		if err == nil {
			t.Fatal("the backup passed with a failing pre hook")
		}
		msg := err.Error()
		if !strings.Contains(msg, "pre hook 2") || !strings.Contains(msg, "volume busy") {
			t.Errorf("the error does not name the hook and its output: %s", msg)
		}
		for _, secret := range s.secrets {
			if strings.Contains(msg, secret) {
				t.Errorf("the error shows a secret of the config: %s", msg)
			}
		}
		// Every attempt thawed what it froze.
		got := logged()
		attempts := strings.Count(got, "pre2 ")
		if attempts == 0 || strings.Count(got, "post1 files primary post 0\npost2 files primary post 0\n") != attempts || !strings.HasSuffix(got, "post2 files primary post 0\n") {
			t.Fatalf("hooks ran as\n%s\nwant the post hooks after every failed pre hook", got)
		}
	})

	t.Run("pre hook timeout", func(t *testing.T) {
		write("pre2", "sleep 30")
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		if err == nil || !strings.Contains(err.Error(), "timed out after 1s") {
			t.Fatalf("err = %v, want the pre hook's timeout", err)
		}
		if got := logged(); !strings.HasSuffix(got, "post2 files primary post 0\n") {
			t.Fatalf("hooks ran as\n%s\nwant the post hooks last", got)
		}
	})

	t.Run("cancelled during the pre hooks", func(t *testing.T) {
		write("pre1", logLine+"\nsleep 2")
		write("pre2", logLine)
		run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "pre1") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("pre1 did not start")
			}
		}
		if err := s.cl.CancelWorkflow(context.Background(), run.GetID(), run.GetRunID()); err != nil {
			t.Fatal(err)
		}
		if err := s.wait(run, nil); err == nil {
			t.Fatal("the cancelled backup passed")
		}
		want := "pre1 files primary pre \npre2 files primary pre \npost1 files primary post 0\npost2 files primary post 0\n"
		if got := logged(); got != want {
			t.Fatalf("hooks ran as\n%s\nwant\n%s", got, want)
		}
		write("pre1", logLine)
	})

	t.Run("backup failing after the pre hooks", func(t *testing.T) {
		// The source disappears after the pre hooks: the snapshot fails
		// (a missing source is permanent), and the post hooks still run.
		write("pre2", logLine+"\nrm -rf "+s.source("primary"))
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		if err == nil {
			t.Fatal("the backup of a missing source passed")
		}
		want := "pre1 files primary pre \npre2 files primary pre \npost1 files primary post 0\npost2 files primary post 0\n"
		if got := logged(); got != want {
			t.Fatalf("hooks ran as\n%s\nwant\n%s", got, want)
		}
	})
}
