package zlog

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestAdapterWritesFields(t *testing.T) {
	var buf bytes.Buffer
	zl, err := New(&buf, "debug")
	if err != nil {
		t.Fatal(err)
	}
	l := Temporal(zl).With("plan", "files")
	l.Info("backup done", "bytes", 42, "dangling")

	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
	}
	for k, want := range map[string]any{"message": "backup done", "plan": "files", "bytes": float64(42), "extra": "dangling", "level": "info"} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (line %s)", k, got[k], want, buf.String())
		}
	}
}

func TestLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	zl, err := New(&buf, "warn")
	if err != nil {
		t.Fatal(err)
	}
	Temporal(zl).Info("hidden")
	if buf.Len() != 0 {
		t.Fatalf("info logged at warn level: %q", buf.String())
	}
	if _, err := New(&buf, "loud"); err == nil {
		t.Fatal("bad level accepted")
	}
}
