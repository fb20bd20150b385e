package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/store/s3"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/workflows"
)

// TestForgetWALRetention: a PostgreSQL plan's repository holds three base
// backups (written through the repository API, as a postgres backup would)
// and the WAL of two timelines. With keepLast 2, drorch forget --dry-run
// names the WAL files it would delete and deletes nothing; forget then
// deletes every WAL file older than the start of the oldest kept base
// backup (and the later timeline's segment before it), and keeps the rest
// and the timeline history.
//
// Not parallel: it sets repo.GCMargin, which the in-process worker reads,
// while the parallel tests wait (as TestForgetCLI).
func TestForgetWALRetention(t *testing.T) {
	old := repo.GCMargin
	repo.GCMargin = 0
	t.Cleanup(func() { repo.GCMargin = old })
	s := newStack(t, stackOptions{encrypt: true, planExtra: func(*stack) string { return "    retention: {keepLast: 2}\n" }})
	if err := os.WriteFile(s.source("primary")+"/data.txt", []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startWorker()
	newest := s.backup().Point // a dir point: the newest, kept, needs no WAL

	ctx := context.Background()
	r := siteRepo(t, s, "primary")
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bases []string
	for i, start := range []string{"000000010000000000000002", "000000010000000000000004", "000000010000000000000006"} {
		at := time.Now().Add(time.Duration(i-3) * time.Hour)
		p := repo.NewPointID(at, fmt.Sprintf("pg%d", i))
		label := fmt.Sprintf("START WAL LOCATION: 0/%s000028 (file %s)\nCHECKPOINT LOCATION: 0/%s000060\nBACKUP METHOD: streamed\nSTART TIMELINE: 1\n", start[23:], start, start[23:])
		id := repo.Hash([]byte(label))
		if _, err := r.PutChunk(ctx, id, []byte(label)); err != nil {
			t.Fatal(err)
		}
		m := r.NewManifest(p, "primary", repo.SourcePostgres, at, ep.Epoch)
		m.Entries = []repo.Entry{
			{Path: ".", Type: source.TypeDir, Mode: 0o700},
			{Path: repo.BackupLabel, Type: source.TypeFile, Mode: 0o600, Size: int64(len(label)), Chunks: []repo.Ref{{ID: id, Size: int64(len(label))}}},
		}
		m.ComputeTotals()
		if err := r.CommitPoint(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
		bases = append(bases, p)
	}
	wal := []string{
		"000000010000000000000001", "000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
		"000000010000000000000005", "000000010000000000000006", "000000010000000000000007", "000000010000000000000008",
		"00000002.history", "000000020000000000000003", "000000020000000000000007",
	}
	for _, n := range wal {
		if _, err := r.PutWAL(ctx, n, []byte(strings.Repeat("wal "+n, 1000))); err != nil {
			t.Fatal(err)
		}
	}
	wantGone := []string{"000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
		"000000010000000000000004", "000000010000000000000005", "000000020000000000000003"}

	site := []string{"--plan", plan, "--site", "primary"}
	out, errOut, err := s.drorch(append([]string{"forget", "--dry-run"}, site...)...)
	if err != nil {
		t.Fatalf("drorch forget --dry-run: %v\n%s\n%s", err, out, errOut)
	}
	t.Logf("drorch forget --dry-run:\n%s", out)
	for _, want := range []string{"WAL: 11 files stored", "kept from 000000010000000000000006", "would delete 6 files",
		"000000010000000000000001 … 000000020000000000000003"} {
		if !strings.Contains(out, want) {
			t.Fatalf("forget --dry-run does not say %q:\n%s", want, out)
		}
	}
	if got := walObjects(t, s, "primary"); !slices.Equal(got, wal) {
		t.Fatalf("a dry run changed the WAL: %v", got)
	}

	out, errOut, err = s.drorch(append([]string{"forget", "--json"}, site...)...)
	if err != nil {
		t.Fatalf("drorch forget: %v\n%s\n%s", err, out, errOut)
	}
	var res workflows.ForgetResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("forget --json: %v\n%s", err, out)
	}
	if forgot := slices.Sorted(slices.Values(res.Forgotten)); !slices.Equal(forgot, bases[:2]) || !slices.Contains(res.Kept, newest) || !slices.Contains(res.Kept, bases[2]) {
		t.Fatalf("forget kept %v and forgot %v; want %v forgotten", res.Kept, res.Forgotten, bases[:2])
	}
	if res.WAL == nil || res.WAL.Deleted != 6 || res.WAL.KeptFrom != "000000010000000000000006" || res.WAL.KeptFromPoint != bases[2] || res.WAL.Freed == 0 {
		t.Fatalf("forget's WAL result: %+v", res.WAL)
	}
	want := slices.DeleteFunc(slices.Clone(wal), func(n string) bool { return slices.Contains(wantGone, n) })
	if got := walObjects(t, s, "primary"); !slices.Equal(got, want) {
		t.Fatalf("after forget the site holds WAL %v\nwant %v", got, want)
	}
	// What is kept still reads back, verified.
	for _, n := range want {
		if _, err := r.GetWAL(ctx, n); err != nil {
			t.Fatalf("kept WAL file %s: %v", n, err)
		}
	}
}

// siteRepo opens the plan's repository at site as the workers do.
func siteRepo(t *testing.T, s *stack, site string) *repo.Repo {
	t.Helper()
	cs, err := s.cfg.Site(site)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3.New(s3.Config{Endpoint: cs.Store.Endpoint, Bucket: cs.Store.Bucket, AccessKey: cs.Store.AccessKey, SecretKey: cs.Store.SecretKey, Insecure: cs.Store.Insecure})
	if err != nil {
		t.Fatal(err)
	}
	var key []byte
	if p := s.cfg.Plans[plan]; p.Encryption != nil {
		if key, err = repo.ParseKey(p.Encryption.Key.Value()); err != nil {
			t.Fatal(err)
		}
	}
	r, err := repo.New(st, plan, key)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// walObjects lists the names of the WAL objects at site, as the bucket
// holds them.
func walObjects(t *testing.T, s *stack, site string) []string {
	t.Helper()
	mc := s.minio[site].Client(t)
	var names []string
	for obj := range mc.ListObjects(context.Background(), "drorch", minio.ListObjectsOptions{Prefix: plan + "/wal/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("list WAL at %s: %v", site, obj.Err)
		}
		names = append(names, strings.TrimPrefix(obj.Key, plan+"/wal/"))
	}
	return names
}
