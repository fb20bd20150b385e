package dir

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

func TestNewRejectsRelativeOrUncleanPaths(t *testing.T) {
	for _, p := range []string{"", "data", "./data", "/srv/../data", "/srv/data/", "/srv//data", "/srv/./data"} {
		_, err := New(p)
		wantPermanent(t, err, drivers.ReasonInvalidConfig)
	}
	d, err := New("/srv/data")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Describe(); got != "dir /srv/data" {
		t.Fatalf("Describe() = %q", got)
	}
}

func TestScanReportsEveryKindOfEntryInOrder(t *testing.T) {
	root := filepath.Join(tempDir(t), "src")
	want := build(t, root, richTree)
	got := scanAll(t, mustNew(t, root))
	sameEntries(t, got, want)

	byPath := map[string]source.Entry{}
	for _, e := range got {
		byPath[e.Path] = e
	}
	if m := byPath["exec"].Mode; m&fs.ModeSetuid == 0 {
		t.Errorf("exec: mode %v lacks setuid", m)
	}
	if m := byPath["sgid"].Mode; m&fs.ModeSetgid == 0 {
		t.Errorf("sgid: mode %v lacks setgid", m)
	}
	if m := byPath["tmp"].Mode; m&fs.ModeSticky == 0 {
		t.Errorf("tmp: mode %v lacks sticky", m)
	}
	if e := byPath["fifo"]; e.Type != source.TypeOther {
		t.Errorf("fifo: type %s, want other", e.Type)
	}
	if e := byPath["link-dir"]; e.Type != source.TypeSymlink {
		t.Errorf("a symlink to a directory must be a symlink, got %s", e.Type)
	}
	if _, ok := byPath["link-dir/b"]; ok {
		t.Error("the scan followed a symlink to a directory")
	}
}

func TestScanSingleFile(t *testing.T) {
	path := filepath.Join(tempDir(t), "disk.img")
	if err := os.WriteFile(path, []byte("image"), 0o640); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2021, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
	got := scanAll(t, mustNew(t, path))
	want := []source.Entry{{Path: ".", Type: source.TypeFile, Mode: 0o640, Size: 5, ModTime: mt,
		UID: os.Geteuid(), GID: os.Getegid()}}
	sameEntries(t, got, want)
}

func TestScanSkipsWhatVanishes(t *testing.T) {
	root := filepath.Join(tempDir(t), "src")
	build(t, root, []spec{
		{path: ".", typ: source.TypeDir, mode: 0o755},
		{path: "a", typ: source.TypeFile, mode: 0o644},
		{path: "b", typ: source.TypeFile, mode: 0o644},
		{path: "c", typ: source.TypeDir, mode: 0o755},
		{path: "c/x", typ: source.TypeFile, mode: 0o644},
		{path: "d", typ: source.TypeFile, mode: 0o644},
	})
	var paths []string
	err := mustNew(t, root).Scan(context.Background(), func(e source.Entry) error {
		paths = append(paths, e.Path)
		if e.Path == "a" { // after the root was listed
			if err := os.Remove(filepath.Join(root, "b")); err != nil {
				return err
			}
			return os.RemoveAll(filepath.Join(root, "c"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{".", "a", "d"}; !slices.Equal(paths, want) {
		t.Fatalf("paths %q, want %q", paths, want)
	}
}

func TestScanHonoursCancellation(t *testing.T) {
	root := filepath.Join(tempDir(t), "src")
	build(t, root, richTree)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := mustNew(t, root).Scan(ctx, func(source.Entry) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 3 {
		t.Fatalf("err %v after %d entries, want context.Canceled after 3", err, n)
	}
}

func TestScanReturnsCallbackError(t *testing.T) {
	root := filepath.Join(tempDir(t), "src")
	build(t, root, richTree)
	boom := errors.New("boom")
	err := mustNew(t, root).Scan(context.Background(), func(e source.Entry) error {
		if e.Path == "a/b/c.txt" {
			return boom
		}
		return nil
	})
	if err != boom {
		t.Fatalf("err %v, want the callback's", err)
	}
}

func TestCheck(t *testing.T) {
	ctx := context.Background()
	tmp := tempDir(t)
	if err := mustNew(t, tmp).Check(ctx); err != nil {
		t.Fatalf("directory: %v", err)
	}
	file := filepath.Join(tmp, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := mustNew(t, file).Check(ctx); err != nil {
		t.Fatalf("file: %v", err)
	}

	missing := filepath.Join(tmp, "missing")
	err := mustNew(t, missing).Check(ctx)
	if !drivers.IsNotFound(err) {
		t.Fatalf("missing: %v, want not found", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(missing)) {
		t.Errorf("missing: %q does not name the path", err)
	}

	link := filepath.Join(tmp, "link")
	if err := os.Symlink(tmp, link); err != nil {
		t.Fatal(err)
	}
	wantPermanent(t, mustNew(t, link).Check(ctx), drivers.ReasonInvalidConfig)
	fifo := filepath.Join(tmp, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	wantPermanent(t, mustNew(t, fifo).Check(ctx), drivers.ReasonInvalidConfig)

	if unprivileged() {
		closed := filepath.Join(tmp, "closed")
		if err := os.Mkdir(closed, 0o000); err != nil {
			t.Fatal(err)
		}
		defer os.Chmod(closed, 0o700)
		wantPermanent(t, mustNew(t, closed).Check(ctx), drivers.ReasonAccessDenied)
		secret := filepath.Join(tmp, "secret")
		if err := os.WriteFile(secret, nil, 0o000); err != nil {
			t.Fatal(err)
		}
		wantPermanent(t, mustNew(t, secret).Check(ctx), drivers.ReasonAccessDenied)
	}
}

func TestOpenReadsAndRefusesSwappedPaths(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(tempDir(t), "src")
	build(t, root, richTree)
	d := mustNew(t, root)

	for _, p := range []string{"a/b/c.txt", "ünïcødé/日本.txt", "\xff\xfe", "with\nnewline and spaces "} {
		f, err := d.Open(ctx, p)
		if err != nil {
			t.Fatalf("open %q: %v", p, err)
		}
		want, _ := os.ReadFile(join(root, p))
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
			t.Errorf("read %q: %q, %v", p, got, err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}

	for _, p := range []string{"../x", "/etc/passwd", "a/../../x", "a//b", "./a", ""} {
		_, err := d.Open(ctx, p)
		wantPermanent(t, err, drivers.ReasonInvalidInput)
	}
	if _, err := d.Open(ctx, "nope"); !drivers.IsNotFound(err) {
		t.Errorf("open missing: %v, want not found", err)
	}
	// Symlinks, directories and FIFOs are not regular files (and opening the
	// FIFO must not block).
	for _, p := range []string{"link-file", "link-dir/b/c.txt", "a", "fifo"} {
		_, err := d.Open(ctx, p)
		wantPermanent(t, err, drivers.ReasonSourceChanged)
	}
	// A directory swapped for a symlink since the scan is not followed.
	if err := os.Rename(join(root, "a"), join(root, "a.moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a.moved", join(root, "a")); err != nil {
		t.Fatal(err)
	}
	_, err := d.Open(ctx, "a/b/c.txt")
	wantPermanent(t, err, drivers.ReasonSourceChanged)
}

func TestChanged(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(tempDir(t), "src")
	build(t, root, richTree)
	d := mustNew(t, root)
	var e source.Entry
	for _, x := range scanAll(t, d) {
		if x.Path == "a/b/c.txt" {
			e = x
		}
	}
	f, err := d.Open(ctx, e.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	changed := func() bool {
		t.Helper()
		c, err := f.Changed(e)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if changed() {
		t.Fatal("unchanged file reported as changed")
	}
	path := join(root, e.Path)
	if err := os.WriteFile(path, []byte("hello c, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !changed() {
		t.Fatal("size change not reported")
	}
	// Same size as scanned, another mtime (by one nanosecond).
	if err := os.WriteFile(path, []byte("HELLO C"), 0o600); err != nil {
		t.Fatal(err)
	}
	mt := e.ModTime.Add(time.Nanosecond)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
	if !changed() {
		t.Fatal("mtime change not reported")
	}
	size, mtime, err := f.Stat()
	if err != nil || size != e.Size || !mtime.Equal(mt) {
		t.Fatalf("Stat() = %d, %v, %v; want %d, %v", size, mtime, err, e.Size, mt)
	}
}
