// Package testenv starts the real servers that drorch's tests talk to — MinIO and
// the Temporal dev server — from binaries built once and cached outside the
// repository, and makes sure every server dies with the test process.
//
// It is meant for _test.go files and for the bench command; nothing in a
// production binary should import it.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tool is a binary built from source by `go tool task tools` and cached per version.
type tool struct {
	version string // the module version it is built from; part of the cache path
	pkg     string // what `go install` builds
}

var tools = map[string]tool{
	"minio":    {version: "v0.0.0-20260212201848-7aac2a2c5b7c", pkg: "github.com/minio/minio"},
	"temporal": {version: "v1.5.1", pkg: "github.com/temporalio/cli/cmd/temporal"},
}

// CacheDir is where cached tools live: ${XDG_CACHE_HOME:-$HOME/.cache}/drorch/tools.
func CacheDir() (string, error) {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the tool cache: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "drorch", "tools"), nil
}

// ToolPath returns the path of a cached tool binary ("minio" or "temporal"). It
// looks, in order, at $DRORCH_<NAME>_BIN, the per-version cache directory, and
// PATH. An override that points nowhere is an error rather than a fallback, so
// a typo never silently tests a different binary.
func ToolPath(name string) (string, error) {
	tl, ok := tools[name]
	if !ok {
		return "", fmt.Errorf("unknown tool %q", name)
	}
	env := "DRORCH_" + strings.ToUpper(name) + "_BIN"
	if p := os.Getenv(env); p != "" {
		if err := isExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, p, err)
		}
		return p, nil
	}
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	cached := filepath.Join(dir, name+"-"+tl.version, name)
	if isExecutable(cached) == nil {
		return cached, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found at %s (nor $%s, nor PATH): build it with `go tool task tools` (go install %s@%s)",
		name, cached, env, tl.pkg, tl.version)
}

// Tool returns the path of a cached tool binary. When it is missing the test is
// skipped, except in CI (CI=true), where a missing server must not pass silently.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := ToolPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testenv: %v", err)
		}
		t.Skipf("testenv: %v", err)
	}
	return p
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return errors.New("is not executable")
	}
	return nil
}
