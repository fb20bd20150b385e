package repo

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A worker restarted in the middle of an operation reads before it writes:
// its first use of the codecs must be able to be a read. The codecs are made
// once per process, so the read runs in a fresh child process.
func TestFirstUseOfCodecsIsARead(t *testing.T) {
	if body := os.Getenv("REPO_FRESH_BODY"); body != "" {
		b, err := os.ReadFile(body)
		if err != nil {
			t.Fatal(err)
		}
		st := newMemStore()
		st.objs["p/staging/op/state.json.zst"] = b
		r, err := New(st, "p", nil)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]int
		if err := r.GetStaging(context.Background(), "op", "state", &v); err != nil || v["n"] != 7 {
			t.Fatalf("first read in a fresh process: %v, %v", v, err)
		}
		return
	}
	st := newMemStore()
	r, err := New(st, "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.PutStaging(context.Background(), "op", "state", map[string]int{"n": 7}); err != nil {
		t.Fatal(err)
	}
	b, ok := st.objs["p/staging/op/state.json.zst"]
	if !ok {
		t.Fatalf("staging object not where expected: %d objects", len(st.objs))
	}
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFirstUseOfCodecsIsARead$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REPO_FRESH_BODY="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fresh process: %v\n%s", err, out)
	}
}
