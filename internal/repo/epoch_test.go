package repo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

func wantPrecondition(t *testing.T, what string, err error) {
	t.Helper()
	if !drivers.IsPreconditionFailed(err) {
		t.Fatalf("%s: got %v, want an error wrapping drivers.ErrPreconditionFailed", what, err)
	}
}

func TestEpochCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, testKey} {
		r, st := newTestRepo(t, key)
		e, err := r.GetEpoch(ctx)
		if err != nil || e.Epoch != 0 || e.Version != "" || e.Site != "" {
			t.Fatalf("absent epoch: %+v %v", e, err)
		}
		want := Epoch{Epoch: 7, Site: "dc2", Reason: "failover", Updated: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
		v1, err := r.PutEpoch(ctx, want, "")
		if err != nil || v1.Version == "" {
			t.Fatalf("create: %+v %v", v1, err)
		}
		_, err = r.PutEpoch(ctx, want, "")
		wantPrecondition(t, "a second create", err)

		// Plain JSON even in an encrypted repository, for operators.
		raw := string(st.raw("web/epoch.json"))
		if !strings.Contains(raw, `"epoch": 7`) || !strings.Contains(raw, `"site": "dc2"`) {
			t.Fatalf("epoch.json is not plain JSON: %s", raw)
		}
		if hasMAC := strings.HasPrefix(raw, "{\n  \"mac\": \"hmac-sha256:"); hasMAC != (key != nil) {
			t.Fatalf("with key %v, epoch.json has a MAC line: %v:\n%s", key != nil, hasMAC, raw)
		}
		got, err := r.GetEpoch(ctx)
		if err != nil || !got.Updated.Equal(want.Updated) || got.Epoch != 7 || got.Site != "dc2" || got.Reason != "failover" || got.Version != v1.Version {
			t.Fatalf("GetEpoch: %+v %v, want version %q", got, err, v1.Version)
		}

		got.Epoch = 8
		v2, err := r.PutEpoch(ctx, got, got.Version)
		if err != nil {
			t.Fatal(err)
		}
		stale := got
		stale.Epoch = 9
		_, err = r.PutEpoch(ctx, stale, v1.Version)
		wantPrecondition(t, "a write over a version replaced since", err)
		if e, _ := r.GetEpoch(ctx); e.Epoch != 8 || e.Version != v2.Version {
			t.Fatalf("a refused write changed the epoch: %+v", e)
		}
	}
}

func TestEpochCorrupt(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	for _, bad := range []string{"", "{", `{"epoch":-1}`, `{"epoch":1,"extra":2}`, `{"epoch":1} {}`, "[]",
		`{"epoch":1,"pending":[{"point":"p","epoch":1,"since":"2026-01-01T00:00:00Z","x":1}]}`} {
		st.set("web/epoch.json", []byte(bad))
		_, err := r.GetEpoch(ctx)
		wantReason(t, err, drivers.ReasonCorrupt)
		if !strings.Contains(err.Error(), "mem://test/web/epoch.json") {
			t.Errorf("%q: the error does not name the object: %v", bad, err)
		}
	}
	st.set("web/epoch.json", bytes.Repeat([]byte(" "), maxEpochSize+1))
	_, err := r.GetEpoch(ctx)
	wantReason(t, err, drivers.ReasonCorrupt)
}

// sealByHand seals an epoch.json as docs/format.md tells an operator to,
// with nothing from this package but the file.
func sealByHand(key []byte, plan string, file []byte) []byte {
	k := hmac.New(sha256.New, key)
	k.Write([]byte("drorch epoch.json mac v1"))
	body := file[bytes.IndexByte(file, '\n')+1:] // tail -n +2
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write([]byte("epoch:" + plan + "\n"))
	m.Write(body)
	return append([]byte("{\n  \"mac\": \"hmac-sha256:"+hex.EncodeToString(m.Sum(nil))+"\",\n"), body...)
}

// flipHex returns b with the hex digit at i changed.
func flipHex(b []byte, i int) []byte {
	b = bytes.Clone(b)
	if b[i] == '0' {
		b[i] = '1'
	} else {
		b[i] = '0'
	}
	return b
}

func TestEpochMAC(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, testKey)
	if _, err := r.PutEpoch(ctx, Epoch{Epoch: 4, Site: "dc1", Active: "dc1", Updated: time.Unix(0, 0).UTC()}, ""); err != nil {
		t.Fatal(err)
	}
	sealed := bytes.Clone(st.raw("web/epoch.json"))

	// What an older drorch wrote: the same JSON, no MAC.
	old, err := json.MarshalIndent(struct {
		Epoch   uint64 `json:"epoch"`
		Site    string `json:"site"`
		Active  string `json:"active"`
		Updated string `json:"updated"`
	}{4, "dc1", "dc1", "1970-01-01T00:00:00Z"}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	old = append(old, '\n')

	for _, tc := range []struct {
		name string
		file []byte
		want string // in the message
	}{
		{"epoch changed", bytes.Replace(sealed, []byte(`"epoch": 4`), []byte(`"epoch": 9`), 1), "MAC does not match"},
		{"active changed", bytes.Replace(sealed, []byte(`"active": "dc1"`), []byte(`"active": "dc2"`), 1), "MAC does not match"},
		{"MAC changed", flipHex(sealed, len("{\n  \"mac\": \"hmac-sha256:")+5), "MAC does not match"},
		{"MAC line malformed", bytes.Replace(sealed, []byte(`",`), []byte(`" ,`), 1), "MAC line is malformed"},
		{"MAC removed, after sealing began", old, "after sealing began"},
		{"MAC of another plan", sealByHand(testKey, "db", old), "MAC does not match"},
		{"MAC with another key", sealByHand(bytes.Repeat([]byte{7}, KeySize), "web", old), "MAC does not match"},
	} {
		st.set("web/epoch.json", tc.file)
		_, err := r.GetEpoch(ctx)
		wantReason(t, err, drivers.ReasonCorrupt)
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "mem://test/web/epoch.json") {
			t.Errorf("%s: got %q, want a message with %q naming the object", tc.name, err, tc.want)
		}
	}

	// Sealed by hand with the MAC docs/format.md describes: accepted.
	st.set("web/epoch.json", sealByHand(testKey, "web", old))
	if e, err := r.GetEpoch(ctx); err != nil || e.Epoch != 4 || e.Active != "dc1" {
		t.Fatalf("an epoch.json sealed as docs/format.md says: %+v %v", e, err)
	}
	if got := sealByHand(testKey, "web", old); !bytes.Equal(got, sealed) {
		t.Fatalf("sealing by hand differs from drorch's own:\n%s\n%s", got, sealed)
	}

	// A repository without a key cannot check a MAC: it refuses the file
	// rather than trust it.
	unkeyed, err := New(st, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	st.set("web/epoch.json", sealed)
	_, err = unkeyed.GetEpoch(ctx)
	wantReason(t, err, drivers.ReasonCorrupt)
	if !strings.Contains(err.Error(), "no encryption key") {
		t.Errorf("got %v", err)
	}
}

func TestEpochNeverWraps(t *testing.T) {
	ctx := context.Background()
	if n, err := NextEpoch(41); n != 42 || err != nil {
		t.Fatalf("NextEpoch(41) = %d, %v", n, err)
	}
	_, err := NextEpoch(math.MaxUint64)
	wantReason(t, err, drivers.ReasonInvalidInput)
	if !strings.Contains(err.Error(), "cannot be raised") {
		t.Errorf("got %v", err)
	}

	r, _ := newTestRepo(t, testKey)
	if _, err := r.PutEpoch(ctx, Epoch{Epoch: 5}, ""); err != nil {
		t.Fatal(err)
	}
	_, err = r.UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch = 4; return nil })
	wantReason(t, err, drivers.ReasonInvalidInput)
	if e, _ := r.GetEpoch(ctx); e.Epoch != 5 {
		t.Fatalf("a refused update lowered the epoch to %d", e.Epoch)
	}
}

// Concurrent read, compute, compare-and-swap updates lose nothing.
func TestUpdateEpochConcurrent(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t, testKey)
	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for range each {
				if _, err := r.UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch++; return nil }); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if e, _ := r.GetEpoch(ctx); e.Epoch != workers*each {
		t.Fatalf("epoch %d after %d increments", e.Epoch, workers*each)
	}
}

func pointManifest(r *Repo, point string, epoch uint64) *Manifest {
	m := r.NewManifest(point, "dc1", "dir", time.Date(2026, 11, 22, 10, 1, 50, 0, time.UTC), epoch)
	m.Entries = []Entry{{Path: ".", Type: source.TypeDir, Mode: 0o755}}
	m.ComputeTotals()
	return m
}

func raise(t *testing.T, r *Repo, to uint64) {
	t.Helper()
	if _, err := r.UpdateEpoch(context.Background(), func(e *Epoch) error { e.Epoch = to; return nil }); err != nil {
		t.Fatal(err)
	}
}

// wantValid checks what every reader says of point.
func wantValid(t *testing.T, r *Repo, point string, valid bool) {
	t.Helper()
	ctx := context.Background()
	pts, err := r.Points(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, p := range pts {
		listed = listed || p.ID == point
	}
	has, err := r.HasManifest(ctx, point)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.GetManifest(ctx, point)
	if listed != valid || has != valid || (err == nil) != valid {
		t.Fatalf("point %s: listed %v, HasManifest %v, GetManifest error %v; want valid = %v", point, listed, has, err, valid)
	}
	if !valid && !drivers.IsNotFound(err) {
		t.Fatalf("GetManifest of an invalid point: %v, want not found", err)
	}
}

func wantSuperseded(t *testing.T, err error, by string) {
	t.Helper()
	wantReason(t, err, drivers.ReasonFenced)
	if !strings.Contains(err.Error(), "superseded by epoch "+by) {
		t.Fatalf("got %q, want \"superseded by epoch %s\"", err, by)
	}
}

func TestCommitPoint(t *testing.T) {
	ctx := context.Background()
	const p1, p2, p3 = "2026-11-22T10:00:00.000Z-a", "2026-11-22T10:00:01.000Z-b", "2026-11-22T10:00:02.000Z-c"

	t.Run("NoRaise", func(t *testing.T) {
		r, _ := newTestRepo(t, testKey)
		raise(t, r, 3)
		checked := false
		err := r.CommitPoint(ctx, pointManifest(r, p1, 3), func(ctx context.Context) error {
			checked = true
			// During the check the point is pending: no reader takes it.
			e, err := r.GetEpoch(ctx)
			if err != nil || e.pending(p1) == nil {
				t.Errorf("during the check: %+v %v, want %s pending", e, err, p1)
			}
			return nil
		})
		if err != nil || !checked {
			t.Fatalf("commit: %v (checked %v)", err, checked)
		}
		wantValid(t, r, p1, true)
		if e, _ := r.GetEpoch(ctx); len(e.Pending)+len(e.Abandoned) != 0 {
			t.Fatalf("after a commit epoch.json still lists %+v %+v", e.Pending, e.Abandoned)
		}
		// Idempotent: the same manifest again is success, another is not.
		if err := r.CommitPoint(ctx, pointManifest(r, p1, 3), nil); err != nil {
			t.Fatalf("committing the same point again: %v", err)
		}
		other := pointManifest(r, p1, 3)
		other.Site = "dc2"
		err = r.CommitPoint(ctx, other, nil)
		wantReason(t, err, drivers.ReasonInvalidInput)
		if !strings.Contains(err.Error(), "a different manifest") {
			t.Fatalf("got %v", err)
		}
		wantValid(t, r, p1, true)
		// A raise after the commit changes nothing for the point.
		raise(t, r, 4)
		wantValid(t, r, p1, true)
	})

	t.Run("RaiseBefore", func(t *testing.T) {
		r, st := newTestRepo(t, testKey)
		raise(t, r, 4)
		err := r.CommitPoint(ctx, pointManifest(r, p1, 3), func(context.Context) error {
			t.Error("the check ran for a writer already superseded")
			return nil
		})
		wantSuperseded(t, err, "4")
		if st.raw("web/points/"+p1+".json.zst") != nil {
			t.Fatal("a superseded writer wrote its manifest")
		}
		wantValid(t, r, p1, false)
	})

	t.Run("RaiseDuringCheck", func(t *testing.T) {
		r, st := newTestRepo(t, testKey)
		raise(t, r, 3)
		err := r.CommitPoint(ctx, pointManifest(r, p1, 3), func(context.Context) error {
			raise(t, r, 4) // a failover while the chunks are listed
			return nil
		})
		wantSuperseded(t, err, "4")
		if st.raw("web/points/"+p1+".json.zst") != nil {
			t.Fatal("the manifest of an abandoned point was left behind")
		}
		e, _ := r.GetEpoch(ctx)
		if a := e.abandoned(p1); a == nil || a.Epoch != 3 || a.By != 4 || len(e.Pending) != 0 {
			t.Fatalf("epoch.json: %+v", e)
		}
		wantValid(t, r, p1, false)
		// A retry stays superseded, and a reader sees it abandoned for good.
		wantSuperseded(t, r.CommitPoint(ctx, pointManifest(r, p1, 3), nil), "4")
		_, err = r.GetManifest(ctx, p1)
		wantReason(t, err, drivers.ReasonNotFound)
		if !strings.Contains(err.Error(), "abandoned") {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("RaiseAfterManifest", func(t *testing.T) {
		// A writer that wrote its manifest and lost its worker before it
		// released the point: the manifest is there, but the point is
		// pending, then abandoned by the raise.
		r, _ := newTestRepo(t, testKey)
		raise(t, r, 3)
		m := pointManifest(r, p2, 3)
		plain, body := sealForTest(t, r, m)
		began, _, err := r.reserve(ctx, p2, 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.createManifest(ctx, began, p2, plain, body); err != nil {
			t.Fatal(err)
		}
		wantValid(t, r, p2, false) // pending
		_, err = r.GetManifest(ctx, p2)
		if _, perm := drivers.IsPermanent(err); perm || !strings.Contains(err.Error(), "being committed") {
			t.Fatalf("a pending point: %v, want a transient not found", err)
		}
		raise(t, r, 4)
		wantValid(t, r, p2, false)
		wantSuperseded(t, r.CommitPoint(ctx, m, nil), "4")
	})

	t.Run("RetryAfterManifest", func(t *testing.T) {
		// The same, without a raise: the retry finishes the commit.
		r, _ := newTestRepo(t, nil)
		raise(t, r, 3)
		m := pointManifest(r, p3, 3)
		plain, body := sealForTest(t, r, m)
		began, _, err := r.reserve(ctx, p3, 3)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.createManifest(ctx, began, p3, plain, body); err != nil {
			t.Fatal(err)
		}
		if err := r.CommitPoint(ctx, m, nil); err != nil {
			t.Fatal(err)
		}
		wantValid(t, r, p3, true)
	})

	t.Run("NewerWriter", func(t *testing.T) {
		// A transmission brings a point of a newer epoch than the
		// destination's: it commits, and a raise to its own epoch does not
		// abandon it.
		r, _ := newTestRepo(t, testKey)
		raise(t, r, 3)
		err := r.CommitPoint(ctx, pointManifest(r, p1, 5), func(context.Context) error {
			raise(t, r, 5)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		wantValid(t, r, p1, true)
	})
}

func TestPruneEpoch(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, testKey)
	const stale, aged, gone, fresh = "2026-01-01T00:00:00.000Z-stale", "2026-01-01T00:00:00.000Z-aged", "2026-01-01T00:00:00.000Z-gone", "2026-01-01T00:00:00.000Z-fresh"
	now := time.Now().UTC()
	for _, p := range []string{aged, fresh} {
		st.set("web/"+manifestKey(p), []byte("left by a writer that never came back"))
	}
	if _, err := r.PutEpoch(ctx, Epoch{
		Epoch:   4,
		Pending: []PendingPoint{{Point: stale, Epoch: 4, Since: now.Add(-staleAfter - time.Hour)}},
		Abandoned: []AbandonedPoint{
			{Point: aged, Epoch: 3, By: 4, At: now.Add(-keepAbandoned - time.Hour)},
			{Point: fresh, Epoch: 3, By: 4, At: now.Add(-time.Hour)},
			{Point: gone, Epoch: 3, By: 4, At: now.Add(-keepAbandoned - 2*forgetAfter), Deleted: now.Add(-forgetAfter - time.Hour)},
		},
	}, ""); err != nil {
		t.Fatal(err)
	}
	e, err := r.UpdateEpoch(ctx, func(e *Epoch) error { e.Reason = "any write prunes"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if a := e.abandoned(stale); a == nil || a.By != 4 || len(e.Pending) != 0 {
		t.Errorf("a point pending for longer than %s was not abandoned: %+v", staleAfter, e)
	}
	if a := e.abandoned(aged); a == nil || a.Deleted.IsZero() || st.raw("web/"+manifestKey(aged)) != nil {
		t.Errorf("an entry abandoned for longer than %s: %+v, manifest %q; want its manifest deleted and the entry marked", keepAbandoned, a, st.raw("web/"+manifestKey(aged)))
	}
	if a := e.abandoned(fresh); a == nil || !a.Deleted.IsZero() || st.raw("web/"+manifestKey(fresh)) == nil {
		t.Errorf("a recent abandoned entry changed: %+v", a)
	}
	if e.abandoned(gone) != nil {
		t.Errorf("an entry whose manifest was deleted more than %s ago is kept", forgetAfter)
	}
	pts, err := r.Points(ctx)
	if err != nil || len(pts) != 0 {
		t.Fatalf("points: %+v %v, want none valid", pts, err)
	}
}

// sealForTest writes m's entry parts and returns its point object, plain
// and sealed, as a commit would store it.
func sealForTest(t *testing.T, r *Repo, m *Manifest) (plain, body []byte) {
	t.Helper()
	w, err := r.writeManifest(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	body, err = r.seal(w.plain, []byte("manifest:"+m.Point))
	if err != nil {
		t.Fatal(err)
	}
	return w.plain, body
}
