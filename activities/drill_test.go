package activities

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/source/dir"
	"github.com/drorch/drorch/drivers/store/s3"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
)

// verifyRepo opens a repository without a key on a new MinIO.
func verifyRepo(t *testing.T) *repo.Repo {
	t.Helper()
	m := testenv.StartMinIO(t)
	st, err := s3.New(s3.Config{
		Endpoint: m.Endpoint, Bucket: "verify", Insecure: true,
		AccessKey: secret.New("test", m.AccessKey), SecretKey: secret.New("test", m.SecretKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	r, err := repo.New(st, "files", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pointOfTree commits a v3 point of the tree at root as it is now, each
// file one chunk (verifyFile hashes the bytes; it does not fetch chunks).
func pointOfTree(t *testing.T, r *repo.Repo, root string) *repo.Point {
	t.Helper()
	ctx := context.Background()
	d, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	id := repo.NewPointID(time.Now(), "verify")
	w, err := r.NewPointWriter(ctx, r.NewManifest(id, "dc1", "dir", time.Now(), 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = d.Scan(ctx, func(e source.Entry) error {
		re := repo.Entry{Path: e.Path, Type: e.Type, Mode: repo.UnixMode(e.Mode), UID: e.UID, GID: e.GID, Size: e.Size, ModTime: e.ModTime, Target: e.Target}
		if e.Type == source.TypeFile && e.Size > 0 {
			b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(e.Path)))
			if err != nil {
				return err
			}
			re.Chunks = []repo.Ref{{ID: repo.ID(sha256.Sum256(b)), Size: int64(len(b))}}
		}
		return w.Add(ctx, &re)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	p, err := r.OpenPoint(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// VerifyTarget's comparison of a v3 point with the tree, entry by entry in
// tree order, finds what is missing, what is extra and what differs, in the
// order a walk meets them, and nothing in a matching tree.
func TestVerifyMergeJoinFindsEveryDifference(t *testing.T) {
	r := verifyRepo(t)
	root := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		p = filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"a/b/one", "a/b/two", "a.c", "a/z", "m/gone/x", "m/gone/y", "m/keep", "zz"} {
		write(p, "content of "+p)
	}
	if err := os.Symlink("a/z", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	p := pointOfTree(t, r, root)
	d, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	verify := func() VerifyTargetResult {
		t.Helper()
		v := &treeVerifier{r: r, d: d, progress: func() {}}
		if err := v.mergeJoin(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		return v.res
	}
	if res := verify(); len(res.Errors) > 0 || res.Entries != p.Meta.Totals.Entries {
		t.Fatalf("the tree the point was taken from: %d of %d entries checked, errors %q", res.Entries, p.Meta.Totals.Entries, res.Errors)
	}

	if err := os.RemoveAll(filepath.Join(root, "m", "gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "zz")); err != nil {
		t.Fatal(err)
	}
	write("a/b/extra", "not in the point")
	write("a/b/two", "content of a/b/Two") // same size and mtime, other bytes
	res := verify()
	want := []string{
		`"a/b/extra" is in the restored tree but not in the restore point`,
		`"a/b/two" at 0`,
		`"m/gone" of the restore point is missing`,
		`"m/gone/x" of the restore point is missing`,
		`"m/gone/y" of the restore point is missing`,
		`"zz" of the restore point is missing`,
	}
	if len(res.Errors) != len(want) || !slices.EqualFunc(res.Errors, want, strings.Contains) {
		t.Fatalf("errors:\n%s\nwant, in this order, errors containing:\n%s", strings.Join(res.Errors, "\n"), strings.Join(want, "\n"))
	}
}
