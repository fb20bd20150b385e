package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/drivers/access/accesstest"
)

// modeScript keeps the mode in the file $STATE_FILE (relative to the working
// directory), the way an operator's script would keep it in the resource,
// and refuses to run when the mode it gets as argument and as DRORCH_MODE
// differ.
const modeScript = `#!/bin/sh
set -eu
case "$1" in
set)
	if [ "$2" != "${DRORCH_MODE:-}" ]; then
		echo "argument $2 and DRORCH_MODE=${DRORCH_MODE:-} differ" >&2
		exit 64
	fi
	printf '%s\n' "$2" > "$STATE_FILE.tmp"
	mv "$STATE_FILE.tmp" "$STATE_FILE"
	;;
status)
	if [ -n "${DRORCH_MODE:-}" ]; then
		echo "DRORCH_MODE is set for the status command" >&2
		exit 64
	fi
	if [ -f "$STATE_FILE" ]; then cat "$STATE_FILE"; else echo read-write; fi
	;;
*)
	echo "usage: $0 set MODE | status" >&2
	exit 64
esac
`

func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustNew(t *testing.T, cfg Config) access.Access {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	script := writeScript(t, dir, "mode.sh", modeScript)
	a := mustNew(t, Config{
		SetMode: []string{script, "set"},
		Status:  []string{script, "status"},
		Env:     []string{"STATE_FILE=state"},
		Dir:     dir,
	})
	if got, want := a.Describe(), "exec "+script; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	accesstest.Run(t, a, func(context.Context) (bool, error) {
		b, err := os.ReadFile(filepath.Join(dir, "state"))
		if errors.Is(err, os.ErrNotExist) {
			return true, nil
		}
		return strings.TrimSpace(string(b)) == string(access.ReadWrite), err
	})
}

func TestFailureShowsOutput(t *testing.T) {
	long := strings.Repeat("x", 3000)
	for _, tc := range []struct {
		name        string
		script      string
		want        []string // in the error
		notWant     []string
		reason      string // permanent reason; "" for transient
		unreachable bool
	}{
		{
			name:   "transient",
			script: `echo "switching $0"; echo "cannot lock the database" >&2; exit 3`,
			want:   []string{"set read-only with exec sh", "exit status 3", "switching read-only\ncannot lock the database"},
		},
		{
			name:    "long output keeps its tail",
			script:  `echo first-line; echo ` + long + `; echo last-line >&2; exit 1`,
			want:    []string{"exit status 1", "output ends with", "last-line"},
			notWant: []string{"first-line"},
		},
		{
			name:   "EX_CONFIG is permanent",
			script: `echo "no such volume" >&2; exit 78`,
			want:   []string{"exit status 78", "no such volume"},
			reason: drivers.ReasonInvalidConfig,
		},
		{
			name:   "EX_NOPERM is permanent",
			script: `exit 77`,
			want:   []string{"exit status 77"},
			reason: drivers.ReasonAccessDenied,
		},
		{
			name:        "EX_UNAVAILABLE is unreachable",
			script:      `echo "storage array does not answer" >&2; exit 69`,
			want:        []string{"unreachable", "exit status 69", "storage array does not answer"},
			unreachable: true,
		},
		{
			name:   "EX_TEMPFAIL is transient",
			script: `exit 75`,
			want:   []string{"exit status 75"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, Config{SetMode: []string{"sh", "-c", tc.script}, Status: []string{"true"}})
			err := a.SetMode(testCtx(t), access.ReadOnly)
			if err == nil {
				t.Fatal("SetMode succeeded")
			}
			t.Log(err)
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q", w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("error has %q", w)
				}
			}
			if len(msg) > tailSize+200 {
				t.Errorf("error is %d bytes long", len(msg))
			}
			if reason, _ := drivers.IsPermanent(err); reason != tc.reason {
				t.Errorf("permanent reason = %q, want %q", reason, tc.reason)
			}
			if drivers.IsUnreachable(err) != tc.unreachable {
				t.Errorf("unreachable = %v, want %v", !tc.unreachable, tc.unreachable)
			}
		})
	}
}

func TestTimeoutKillsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	// The shell starts a child, records both pids and waits: killing only
	// the shell would leave the child running.
	script := `sleep 100 & echo "$$ $!" > "$PIDS"; wait`
	timeout := 500 * time.Millisecond
	a := mustNew(t, Config{
		SetMode: []string{"sh", "-c", script},
		Status:  []string{"true"},
		Env:     []string{"PIDS=" + pids},
		Timeout: timeout,
	})
	start := time.Now()
	err := a.SetMode(testCtx(t), access.ReadOnly)
	elapsed := time.Since(start)
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "timed out after 500ms") {
		t.Fatalf("SetMode = %v; want a timeout", err)
	}
	if _, perm := drivers.IsPermanent(err); perm || drivers.IsUnreachable(err) {
		t.Fatalf("a timeout is transient and not unreachable: %v", err)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("SetMode returned after %s with a %s timeout", elapsed, timeout)
	}
	assertDead(t, pids)
}

func TestCancelKillsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	a := mustNew(t, Config{
		SetMode: []string{"sh", "-c", `sleep 100 & echo "$$ $!" > "$PIDS"; wait`},
		Status:  []string{"true"},
		Env:     []string{"PIDS=" + pids},
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if _, err := os.Stat(pids); err == nil {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	err := a.SetMode(ctx, access.ReadWrite)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("SetMode = %v; want context.Canceled", err)
	}
	assertDead(t, pids)
}

// assertDead checks that every pid in the file is gone (or a zombie waiting
// for a parent that is not the test to reap it).
func assertDead(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		t.Fatalf("pid file holds %q", b)
	}
	for _, f := range fields {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("process %d still runs after the command was stopped", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(stat)
	rest := s[strings.LastIndexByte(s, ')')+1:]
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		want   access.Mode
		errHas string // "" for success
	}{
		{"read-only with white space", `printf '  read-only\n\n'`, access.ReadOnly, ""},
		{"read-write", `echo read-write; echo "diagnostics go to stderr" >&2`, access.ReadWrite, ""},
		{"garbage", `echo "mode: maybe"`, "", `printed "mode: maybe" on stdout, want "read-only" or "read-write"`},
		{"nothing", `true`, "", `printed "" on stdout`},
		{"failure", `echo "db down" >&2; exit 2`, "", "exit status 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, Config{SetMode: []string{"true"}, Status: []string{"sh", "-c", tc.script}})
			got, err := a.Status(testCtx(t))
			if tc.errHas == "" {
				if err != nil || got != tc.want {
					t.Fatalf("Status = %s, %v; want %s", got, err, tc.want)
				}
				return
			}
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("Status = %s, %v; want an error containing %q", got, err, tc.errHas)
			}
		})
	}
}

func TestStatusGarbageIsPermanent(t *testing.T) {
	a := mustNew(t, Config{SetMode: []string{"true"}, Status: []string{"echo", "read-mostly"}})
	_, err := a.Status(testCtx(t))
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig {
		t.Fatalf("Status = %v; want permanent InvalidConfig", err)
	}
}

func TestCannotStart(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"not found", Config{SetMode: []string{"/nonexistent/drorch-fence"}, Status: []string{"true"}}, "no such file"},
		{"not in PATH", Config{SetMode: []string{"drorch-no-such-command"}, Status: []string{"true"}}, "not found in $PATH"},
		{"no such directory", Config{SetMode: []string{"true"}, Status: []string{"true"}, Dir: filepath.Join(dir, "missing")}, "working directory: stat"},
		{"not executable", Config{SetMode: []string{notExec}, Status: []string{"true"}}, "permission denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mustNew(t, tc.cfg).SetMode(testCtx(t), access.ReadOnly)
			t.Log(err)
			if _, ok := drivers.IsPermanent(err); !ok || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetMode = %v; want permanent, saying %q", err, tc.want)
			}
		})
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"valid", Config{SetMode: []string{"fence"}, Status: []string{"fence-status"}}, ""},
		{"no set mode", Config{Status: []string{"s"}}, "set mode: is required"},
		{"empty argv[0]", Config{SetMode: []string{""}, Status: []string{"s"}}, "set mode: is required"},
		{"no status", Config{SetMode: []string{"s"}}, "status: is required"},
		{"bad env", Config{SetMode: []string{"s"}, Status: []string{"s"}, Env: []string{"hunter2"}}, "env[0]: must be KEY=VALUE"},
		{"mode in env", Config{SetMode: []string{"s"}, Status: []string{"s"}, Env: []string{"DRORCH_MODE=read-write"}}, "env[0]: DRORCH_MODE is set by drorch"},
		{"negative timeout", Config{SetMode: []string{"s"}, Status: []string{"s"}, Timeout: -1}, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want permanent InvalidConfig containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error echoes an env entry: %v", err)
			}
		})
	}
}
