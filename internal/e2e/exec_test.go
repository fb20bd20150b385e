package e2e

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drorch/drorch/internal/redact"
	"github.com/drorch/drorch/workflows"
)

// execTools returns the paths of the tools the exec source's VM image test
// needs, skipping (failing in CI) when one is missing.
func execTools(t *testing.T, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			msg := name + " not found: install qemu-utils and libnbd-bin (go tool task tools:debian)"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A qcow2 VM disk image is backed up through an exec source whose command
// streams it as raw (qemu-nbd serving the image, nbdcopy writing it to
// stdout: qemu-img convert cannot write to a pipe), restored at the
// secondary by a restore command that writes stdin into a new qcow2 image,
// and qemu-img compare finds the two identical. A second backup after 1% of
// the image's blocks changed uploads little.
func TestExecSourceVMImage(t *testing.T) {
	execTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdcopy")
	var disk, restored, envLog, drillLog string
	paths := func(s *stack) {
		disk, restored = filepath.Join(s.dir, "disk.qcow2"), filepath.Join(s.dir, "restored.qcow2")
		envLog, drillLog = filepath.Join(s.dir, "env.log"), filepath.Join(s.dir, "drill.log")
	}
	s := newStack(t, stackOptions{source: func(s *stack, site string) string {
		paths(s)
		switch site {
		case "primary":
			return `{driver: exec, backup: {command: [sh, -c, 'env | grep ^DRORCH_ | sort > "$ENV_LOG"; nbdcopy -- [ qemu-nbd -r -f qcow2 "$DISK" ] -'], env: {DISK: ` + disk + `, ENV_LOG: ` + envLog + `}}}`
		case "secondary":
			// Into the drill's sandbox when given one, else over the
			// standby's image.
			return `{driver: exec, backup: {command: ["true"]},` +
				` restore: {command: [sh, -c, 'OUT=${DRORCH_TARGET:+$DRORCH_TARGET/vm.qcow2}; OUT=${OUT:-$RESTORED}; echo "drill=$DRORCH_DRILL target=$DRORCH_TARGET" >> "$DRILL_LOG";` +
				` rm -f "$OUT" && qemu-img create -q -f qcow2 "$OUT" "$DRORCH_SIZE" && nbdcopy - -- [ qemu-nbd -f qcow2 "$OUT" ]'],` +
				` env: {RESTORED: ` + restored + `, DRILL_LOG: ` + drillLog + `}}}`
		}
		return ""
	}, planExtra: func(s *stack) string {
		paths(s)
		sandbox := filepath.Join(s.dir, "sandbox")
		// The drill's check: the image in the sandbox is the primary's.
		return "    drill: {sandbox: " + sandbox + "}\n" +
			"    steps: [{name: image, on: [drill], after: [{exec: [qemu-img, compare, " + disk + ", " + sandbox + "/vm.qcow2]}]}]\n"
	}})
	// 64 MiB of random data: nothing in it dedups or compresses, so what a
	// backup uploads is what changed.
	const size = 64 << 20
	raw := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < size; i += 8 {
		v := rng.Uint64()
		for k := range 8 {
			raw[i+k] = byte(v >> (8 * k))
		}
	}
	rawPath := filepath.Join(s.dir, "disk.raw")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", rawPath, disk)
	os.Remove(rawPath)
	s.startWorker()

	first := s.backup()
	if first.BytesRead != size || first.BytesNew < size*9/10 {
		t.Fatalf("first backup read %d bytes and stored %d new, want the whole %d-byte image", first.BytesRead, first.BytesNew, size)
	}
	// The command saw the backup's plan, site, point and snapshot time.
	env, err := os.ReadFile(envLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DRORCH_PLAN=" + plan, "DRORCH_SITE=primary", "DRORCH_POINT=" + first.Point,
		"DRORCH_SNAPSHOT=" + first.Snapshot.UTC().Format(time.RFC3339Nano)} {
		if !strings.Contains(string(env), want+"\n") {
			t.Errorf("the backup command's environment lacks %s:\n%s", want, env)
		}
	}

	// Change 1% of the image's blocks: four runs of 160 KiB spread over
	// it. Each dirties the chunk or two (about 1 MiB each) it falls in.
	for i := range 4 {
		off := int64(i)*(size/4) + 123*4096
		runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P "+strconv.Itoa(0x30+i)+" "+strconv.FormatInt(off, 10)+" 160k", disk)
	}
	second := s.backup()
	t.Logf("second backup: read %d, new %d bytes in %d chunks, uploaded %d", second.BytesRead, second.BytesNew, second.ChunksNew, second.Uploaded)
	if second.BytesRead != size {
		t.Fatalf("second backup read %d bytes, want %d", second.BytesRead, size)
	}
	if second.BytesNew > size/6 || second.Uploaded > size/6 {
		t.Fatalf("after 1%% of the image changed the backup stored %d new bytes (%d uploaded), want well under the image's %d", second.BytesNew, second.Uploaded, size)
	}

	s.transmit()
	res := s.restore("secondary", "")
	if res.Point != second.Point || res.Bytes != size {
		t.Fatalf("restored %s (%d bytes), want %s (%d)", res.Point, res.Bytes, second.Point, size)
	}
	if out := runTool(t, "qemu-img", "compare", disk, restored); !strings.Contains(out, "identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}

	// A drill restores into its sandbox, told so, and its step compares
	// the image there with the primary's.
	var drill workflows.DrillReport
	if err := s.run(workflows.OpDrill, workflows.Drill, workflows.DrillInput{Plan: plan}, &drill); err != nil || !drill.Passed {
		t.Fatalf("drill: %v, passed %v, problems %q", err, drill.Passed, drill.Problems)
	}
	log, _ := os.ReadFile(drillLog)
	if want := "drill=1 target=" + filepath.Join(s.dir, "sandbox") + "\n"; !strings.HasSuffix(string(log), want) {
		t.Fatalf("the restore command ran as\n%s\nwant last %q", log, want)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "sandbox")); !os.IsNotExist(err) {
		t.Errorf("the drill left its sandbox: %v", err)
	}
}

// A backup command that fails, or hangs, fails the backup with its stderr
// capped and cleaned; a restore at a site without a restore command says so.
func TestExecSourceFailures(t *testing.T) {
	var script, restoreScript string
	s := newStack(t, stackOptions{source: func(s *stack, site string) string {
		script, restoreScript = filepath.Join(s.dir, "backup.sh"), filepath.Join(s.dir, "restore.sh")
		if site == "primary" {
			return `{driver: exec, backup: {command: [sh, ` + script + `], timeout: 2s}, restore: {command: [sh, ` + restoreScript + `]}}`
		}
		return `{driver: exec, backup: {command: ["true"]}}`
	}})
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(script, []byte(body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.startWorker()

	t.Run("non-zero exit", func(t *testing.T) {
		// Much output first: only its end reaches the error.
		write(`head -c 3000 /dev/zero | tr '\0' 'x' >&2; echo >&2
echo "export of vm1 failed: password=hunter2hunter2, store key $E2E_PRIMARY_SECRET" >&2
echo partial data
exit 3`)
		start := time.Now()
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		if err == nil {
			t.Fatal("the backup passed with a failing command")
		}
		msg := err.Error()
		if !strings.Contains(msg, "exited with status 3") || !strings.Contains(msg, "export of vm1 failed") {
			t.Errorf("the error does not give the exit status and the command's stderr: %s", msg)
		}
		for _, secret := range append(s.secrets, "hunter2hunter2") {
			if strings.Contains(msg, secret) {
				t.Errorf("the error shows a secret: %s", msg)
			}
		}
		if strings.Count(msg, "x") > 2*redact.TailSize {
			t.Errorf("the error holds %d bytes of the command's output, want it capped", strings.Count(msg, "x"))
		}
		if d := time.Since(start); d > time.Minute {
			t.Errorf("the failing backup took %s: a command that exits non-zero is not retried", d)
		}
	})

	t.Run("hanging command killed at its timeout", func(t *testing.T) {
		pidFile := filepath.Join(s.dir, "child.pid")
		// A child in the background holds stdout open: the whole process
		// group must go.
		write(`echo some data; (sleep 300; echo late) & echo $! > ` + pidFile + `; echo "waiting for the volume" >&2; wait`)
		start := time.Now()
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "timed out after 2s") || !strings.Contains(err.Error(), "waiting for the volume") {
			t.Fatalf("err = %v, want the command's timeout with its stderr", err)
		}
		if took > time.Minute {
			t.Errorf("the hanging backup took %s to fail", took)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if alive(pid) {
			t.Errorf("the command's child %d is still running after the timeout", pid)
		}
	})

	t.Run("failing restore command", func(t *testing.T) {
		write(`head -c 3000000 /dev/urandom`)
		s.backup()
		for _, tc := range []struct{ script, want string }{
			{`head -c 100 >/dev/null; echo "target busy, password=s3cr3tvalue" >&2; exit 5`, "restore command sh exited with status 5: target busy"},
			{`head -c 100 >/dev/null; echo "done early" >&2`, "exited 0 before it read the whole stream"},
		} {
			if err := os.WriteFile(restoreScript, []byte(tc.script+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", Force: true}, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cr3tvalue") {
				t.Errorf("err = %v, want %q, cleaned", err, tc.want)
			}
		}
	})

	t.Run("no restore command", func(t *testing.T) {
		err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, nil)
		if err == nil || !strings.Contains(err.Error(), "has no restore command") || !strings.Contains(err.Error(), "--to") {
			t.Fatalf("err = %v, want that the site has no restore command", err)
		}
	})
}

// alive reports whether pid runs (a zombie waiting to be reaped does not).
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
