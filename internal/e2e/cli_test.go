package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var cliBin struct {
	once sync.Once
	path string
	err  error
}

// drorch runs the drorch CLI against the stack, without the stack's secrets
// in its environment: the CLI must not need them.
func (s *stack) drorch(args ...string) (stdout, stderr string, err error) {
	s.t.Helper()
	cliBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "drorch-e2e-cli")
		if err != nil {
			cliBin.err = err
			return
		}
		cliBin.path = filepath.Join(dir, "drorch")
		if out, err := exec.Command("go", "build", "-o", cliBin.path, "github.com/drorch/drorch/starter").CombinedOutput(); err != nil {
			cliBin.err = err
			s.t.Logf("%s", out)
		}
	})
	if cliBin.err != nil {
		s.t.Fatal(cliBin.err)
	}
	full := append([]string{"--config", s.cfgPath, "--address", s.temporal.Address, "--task-queue", s.queue}, args...)
	cmd := exec.Command(cliBin.path, full...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "E2E_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func TestCLI(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 4, dataBytes: 4 << 20, files: 10})

	out, errOut, err := s.drorch("backup", "--plan", plan, "--wait", "--json")
	if err != nil {
		t.Fatalf("drorch backup: %v\n%s\n%s", err, out, errOut)
	}
	var b struct {
		Point     string `json:"point"`
		BytesRead int64  `json:"bytesRead"`
		BytesNew  int64  `json:"bytesNew"`
		Uploaded  int64  `json:"bytesUploaded"`
	}
	if err := json.Unmarshal([]byte(out), &b); err != nil {
		t.Fatalf("backup --wait --json did not print one JSON object: %v\n%s", err, out)
	}
	if b.Point == "" || b.BytesRead < 4<<20 || b.BytesNew == 0 || b.Uploaded == 0 {
		t.Fatalf("backup result %+v lacks the point or byte counts", b)
	}

	out, errOut, err = s.drorch("transmit", "--plan", plan, "--wait", "--json")
	if err != nil || !strings.Contains(out, `"bytesCopied"`) || !strings.Contains(out, b.Point) {
		t.Fatalf("drorch transmit: %v\n%s\n%s", err, out, errOut)
	}
	to := filepath.Join(s.dir, "cli-restore")
	out, errOut, err = s.drorch("restore", "--plan", plan, "--site", "secondary", "--to", to, "--wait")
	if err != nil || !strings.Contains(out, b.Point) {
		t.Fatalf("drorch restore: %v\n%s\n%s", err, out, errOut)
	}
	requireSameTree(t, s.source("primary"), to)

	out, errOut, err = s.drorch("points", "--plan", plan, "--site", "secondary")
	if err != nil || !strings.Contains(out, b.Point) {
		t.Fatalf("drorch points: %v\n%s\n%s", err, out, errOut)
	}

	// Without --wait, the run is started and named.
	out, _, err = s.drorch("backup", "--plan", plan, "--json")
	if err != nil || !strings.Contains(out, `"workflowId": "drorch/files/backup/`) {
		t.Fatalf("drorch backup without --wait: %v\n%s", err, out)
	}

	// Mistakes are refused before anything starts, saying what is wrong.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "--plan", "nope"}, `"nope"`},
		{[]string{"restore", "--plan", plan}, "--site is required"},
		{[]string{"transmit", "--plan", plan, "--to", "moon"}, `no site "moon"`},
	} {
		_, errOut, err := s.drorch(tc.args...)
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("drorch %v: err %v, stderr %q; want a failure saying %s", tc.args, err, errOut, tc.want)
		}
	}
}
