package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/workflows"
)

// v1FixtureKey is the key testdata/v1repo/encrypted was written with.
const v1FixtureKey = "5f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"

// Repositories written before format v2 keep restoring: testdata/v1repo
// holds two written by drorch before small files became slices (one plain,
// one encrypted with v1FixtureKey): a few files, an empty one, a sparse image
// with a 9 MiB hole, a symlink, a unicode name. Uploaded to MinIO as they
// are, each restores byte for byte with its modes and mtimes.
func TestV1RepositoryRestores(t *testing.T) {
	for _, variant := range []string{"plain", "encrypted"} {
		t.Run(variant, func(t *testing.T) {
			s := newStack(t, stackOptions{encrypt: variant == "encrypted", key: v1FixtureKey})
			s.startWorker()
			fixture := filepath.Join("testdata", "v1repo", variant)
			mc := s.minio["primary"].Client(t)
			ctx := context.Background()
			if err := mc.MakeBucket(ctx, "drorch", minio.MakeBucketOptions{}); err != nil {
				if ok, _ := mc.BucketExists(ctx, "drorch"); !ok {
					t.Fatal(err)
				}
			}
			n := 0
			err := filepath.Walk(filepath.Join(fixture, plan), func(p string, fi os.FileInfo, err error) error {
				if err != nil || !fi.Mode().IsRegular() {
					return err
				}
				rel, _ := filepath.Rel(fixture, p)
				n++
				_, err = mc.FPutObject(ctx, "drorch", filepath.ToSlash(rel), p, minio.PutObjectOptions{})
				return err
			})
			if err != nil || n < 5 {
				t.Fatalf("upload the fixture (%d objects): %v", n, err)
			}
			to := filepath.Join(s.dir, "restored")
			var res workflows.RestoreResult
			if err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to}, &res); err != nil {
				t.Fatalf("restore the v1 repository: %v\n%s", err, s.logs.Tail(3000))
			}

			b, err := os.ReadFile(filepath.Join(fixture, "expected.json"))
			if err != nil {
				t.Fatal(err)
			}
			var want []struct {
				Path string
				node
			}
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			got := readTree(t, to)
			var diffs strings.Builder
			for _, w := range want {
				g, ok := got[w.Path]
				if !ok {
					diffs.WriteString("missing " + w.Path + "\n")
					continue
				}
				delete(got, w.Path)
				g.Blocks = 0
				if g != w.node {
					diffs.WriteString(w.Path + " differs: want " + jsonText(w.node) + " got " + jsonText(g) + "\n")
				}
			}
			for p := range got {
				diffs.WriteString("unexpected " + p + "\n")
			}
			if diffs.Len() > 0 {
				t.Fatalf("the v1 repository restored differently:\n%s", diffs.String())
			}
			// The 9 MiB hole of the image stays a hole.
			requireSparse(t, filepath.Join(to, "disk.img"), 1<<20)
		})
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
