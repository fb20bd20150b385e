package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// markStore counts the reads and writes of the seal marker and can fail the
// next creation of it, as a crash between epoch.json and the marker would.
type markStore struct {
	*memStore
	mu        sync.Mutex
	markGets  int
	markPuts  int
	failMarks int // the next this many marker creations fail
}

func (s *markStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if strings.HasSuffix(key, "/"+sealMarkKey) {
		s.mu.Lock()
		s.markGets++
		s.mu.Unlock()
	}
	return s.memStore.Get(ctx, key)
}

func (s *markStore) PutIf(ctx context.Context, key string, r io.Reader, size int64, cond store.Condition) (string, error) {
	if strings.HasSuffix(key, "/"+sealMarkKey) {
		s.mu.Lock()
		s.markPuts++
		fail := s.failMarks > 0
		if fail {
			s.failMarks--
		}
		s.mu.Unlock()
		if fail {
			return "", fmt.Errorf("put %s: connection reset by peer", key)
		}
	}
	return s.memStore.PutIf(ctx, key, r, size, cond)
}

func newMarkRepo(t *testing.T, st store.Store, key []byte) *Repo {
	t.Helper()
	r, err := New(st, "web", key)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// legacyEpoch is epoch.json as a drorch before the MAC wrote it.
func legacyEpoch(t *testing.T, epoch uint64, active string) []byte {
	t.Helper()
	b, err := json.MarshalIndent(struct {
		Epoch   uint64 `json:"epoch"`
		Site    string `json:"site"`
		Active  string `json:"active"`
		Reason  string `json:"reason"`
		Updated string `json:"updated"`
	}{epoch, active, active, "failover", "2026-01-02T03:04:05Z"}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func wantCorrupt(t *testing.T, what string, err error, text string) {
	t.Helper()
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonCorrupt || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: got %v, want a permanent Corrupt error saying %q", what, err, text)
	}
}

// An older drorch's epoch.json in a keyed repository is trusted until the
// first sealed write, which creates the marker; from then on an unsealed
// file is refused, by any Repo, whoever put it there.
func TestEpochSealMigration(t *testing.T) {
	ctx := context.Background()
	st := &markStore{memStore: newMemStore()}
	st.set("web/epoch.json", legacyEpoch(t, 3, "dc2"))

	r := newMarkRepo(t, st, testKey)
	e, err := r.GetEpoch(ctx)
	if err != nil || e.Epoch != 3 || e.Active != "dc2" || !e.Unsealed || e.Version == "" {
		t.Fatalf("an older drorch's epoch.json, before sealing began: %+v %v; want epoch 3, active dc2, Unsealed", e, err)
	}
	if st.raw("web/"+sealMarkKey) != nil {
		t.Fatal("reading the epoch created the seal marker")
	}

	// The next write (a commit's reservation) seals it and creates the marker.
	began := time.Now().UTC()
	w, err := r.UpdateEpoch(ctx, func(e *Epoch) error {
		e.Pending = append(e.Pending, PendingPoint{Point: "2026-01-02T03:04:05.000Z-a", Epoch: e.Epoch, Since: time.Now().UTC()})
		return nil
	})
	if err != nil || w.Unsealed {
		t.Fatalf("the first write: %+v %v", w, err)
	}
	if raw := st.raw("web/epoch.json"); !bytes.HasPrefix(raw, []byte(epochMACHead)) {
		t.Fatalf("the first write left epoch.json unsealed:\n%s", raw)
	}
	fresh := newMarkRepo(t, st, testKey)
	since, sealed, err := fresh.sealedSince(ctx)
	if err != nil || !sealed || since.Before(began.Add(-time.Second)) || since.After(time.Now()) {
		t.Fatalf("the marker after the first write: since %v, found %v, %v; want one from about %v", since, sealed, err, began)
	}
	if e, err := fresh.GetEpoch(ctx); err != nil || e.Epoch != 3 || e.Active != "dc2" || e.Unsealed || len(e.Pending) != 1 {
		t.Fatalf("the sealed file: %+v %v", e, err)
	}

	// Now someone without the key puts an unsealed file back: refused by a
	// Repo that never saw the marker (a new activity, a restarted worker)
	// as by the one that wrote it.
	st.set("web/epoch.json", legacyEpoch(t, 9, "dc1"))
	for name, rr := range map[string]*Repo{"the writer": r, "a new Repo": newMarkRepo(t, st, testKey)} {
		_, err := rr.GetEpoch(ctx)
		wantCorrupt(t, name+" reading an unsealed epoch.json after sealing began", err, "after sealing began")
		if !strings.Contains(err.Error(), "mem://test/web/epoch.json") || !strings.Contains(err.Error(), since.Format(time.RFC3339)) {
			t.Errorf("%s: %v does not name the file and when sealing began", name, err)
		}
		_, err = rr.UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch++; return nil })
		wantCorrupt(t, name+" updating an unsealed epoch.json after sealing began", err, "after sealing began")
	}

	// Without a key there is nothing to seal: no marker, files as before.
	plain := newMemStore()
	u := newMarkRepo(t, plain, nil)
	if _, err := u.PutEpoch(ctx, Epoch{Epoch: 1}, ""); err != nil {
		t.Fatal(err)
	}
	if plain.raw("web/"+sealMarkKey) != nil {
		t.Fatal("a repository without a key got a seal marker")
	}
	if e, err := u.GetEpoch(ctx); err != nil || e.Unsealed {
		t.Fatalf("unkeyed: %+v %v", e, err)
	}
}

// An unsealed file that lists pending or abandoned points is refused even
// before sealing began: no older drorch wrote those lists.
func TestEpochUnsealedWithNewLists(t *testing.T) {
	ctx := context.Background()
	for _, list := range []string{
		`"pending": [{"point": "2026-01-02T03:04:05.000Z-a", "epoch": 3, "since": "2026-01-02T03:04:05Z"}]`,
		`"abandoned": [{"point": "2026-01-02T03:04:05.000Z-a", "epoch": 2, "by": 3, "at": "2026-01-02T03:04:05Z"}]`,
	} {
		r, st := newTestRepo(t, testKey)
		st.set("web/epoch.json", []byte(`{"epoch": 3, "site": "dc1", "updated": "2026-01-02T03:04:05Z", `+list+"}\n"))
		_, err := r.GetEpoch(ctx)
		wantCorrupt(t, "an unsealed epoch.json with "+list[:11], err, "only a drorch that seals it writes")
	}
}

// A crash after the sealed epoch.json and before the marker leaves a file
// that reads; the next write creates the marker.
func TestEpochSealCrashBeforeMarker(t *testing.T) {
	ctx := context.Background()
	st := &markStore{memStore: newMemStore(), failMarks: 1}
	st.set("web/epoch.json", legacyEpoch(t, 3, "dc2"))
	r := newMarkRepo(t, st, testKey)
	_, err := r.UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch = 4; return nil })
	if err == nil || drivers.IsPreconditionFailed(err) || !strings.Contains(err.Error(), "is written sealed, but creating the marker") {
		t.Fatalf("a write whose marker could not be created: %v", err)
	}
	if _, ok := drivers.IsPermanent(err); ok {
		t.Fatalf("a failed marker creation is permanent: %v", err)
	}
	if st.raw("web/"+sealMarkKey) != nil {
		t.Fatal("the marker exists")
	}
	// Sealed, no marker: reads, by the same Repo and a new one.
	for _, rr := range []*Repo{r, newMarkRepo(t, st, testKey)} {
		if e, err := rr.GetEpoch(ctx); err != nil || e.Epoch != 4 || e.Unsealed {
			t.Fatalf("the sealed file without a marker: %+v %v", e, err)
		}
	}
	// The next write, by anyone, creates the marker.
	if _, err := newMarkRepo(t, st, testKey).UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch = 5; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, sealed, err := newMarkRepo(t, st, testKey).sealedSince(ctx); err != nil || !sealed {
		t.Fatalf("the marker after the next write: %v %v", sealed, err)
	}
}

// The marker is read at most once per Repo, and created at most once.
func TestEpochSealMarkerCached(t *testing.T) {
	ctx := context.Background()
	st := &markStore{memStore: newMemStore()}
	r := newMarkRepo(t, st, testKey)
	for range 5 {
		if _, err := r.UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if st.markGets != 1 || st.markPuts != 1 {
		t.Fatalf("5 writes on a fresh repository read the marker %d times and wrote it %d times, want once each", st.markGets, st.markPuts)
	}
	r2 := newMarkRepo(t, st, testKey)
	for range 5 {
		if _, err := r2.UpdateEpoch(ctx, func(e *Epoch) error { e.Epoch++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if st.markGets != 2 || st.markPuts != 1 {
		t.Fatalf("5 writes by a second Repo: marker read %d times and written %d times in all, want 2 and 1", st.markGets, st.markPuts)
	}
}

// A marker that does not open with the plan's key is refused as corrupt,
// both when it would decide on an unsealed file and before a write; a
// marker created by another writer in between is checked as well.
func TestEpochSealMarkerForged(t *testing.T) {
	ctx := context.Background()
	other, err := New(newMemStore(), "web", bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	otherPlan, err := New(newMemStore(), "db", testKey)
	if err != nil {
		t.Fatal(err)
	}
	sealedBy := func(r *Repo, plan string) []byte {
		plain, _ := json.Marshal(sealMark{Format: sealMarkFormat, Version: 1, Plan: plan, Since: time.Now().UTC()})
		b, err := r.seal(plain, r.sealMarkAD())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unsealedByUs := func() []byte {
		// The plan's key and AD, but not a marker.
		r := newMarkRepo(t, newMemStore(), testKey)
		b, err := r.seal([]byte(`{"format":"something-else","plan":"web"}`), r.sealMarkAD())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		marker []byte
		want   string
	}{
		{"garbage", []byte("sealed, honest"), "too short to be sealed"},
		{"another key", sealedBy(other, "web"), "cannot be decrypted"},
		{"another plan's marker", sealedBy(otherPlan, "db"), "cannot be decrypted"},
		{"not a marker", unsealedByUs(), "not a marker"},
	} {
		st := newMemStore()
		st.set("web/epoch.json", legacyEpoch(t, 3, "dc2"))
		st.set("web/"+sealMarkKey, tc.marker)

		_, err := newMarkRepo(t, st, testKey).GetEpoch(ctx)
		wantCorrupt(t, tc.name+": reading an unsealed epoch.json", err, tc.want)
		if !strings.Contains(err.Error(), "mem://test/web/epoch.sealed") || !strings.Contains(err.Error(), "mem://test/web/epoch.json") {
			t.Errorf("%s: %v does not name both objects", tc.name, err)
		}

		before := bytes.Clone(st.raw("web/epoch.json"))
		_, err = newMarkRepo(t, st, testKey).PutEpoch(ctx, Epoch{Epoch: 4}, etagOf(before))
		wantCorrupt(t, tc.name+": writing epoch.json", err, tc.want)
		if !bytes.Equal(st.raw("web/epoch.json"), before) {
			t.Errorf("%s: a write refused for the marker changed epoch.json", tc.name)
		}

		// Created by another writer between our check and our creation.
		if err := st.Delete(ctx, "web/"+sealMarkKey); err != nil {
			t.Fatal(err)
		}
		r := newMarkRepo(t, st, testKey)
		if _, sealed, err := r.sealedSince(ctx); err != nil || sealed {
			t.Fatalf("%s: no marker: %v %v", tc.name, sealed, err)
		}
		st.set("web/"+sealMarkKey, tc.marker)
		err = r.markSealed(ctx)
		wantCorrupt(t, tc.name+": a marker found when creating it", err, tc.want)
		if drivers.IsPreconditionFailed(err) || errors.Is(err, drivers.ErrPreconditionFailed) {
			t.Errorf("%s: %v would be taken for a lost race on epoch.json", tc.name, err)
		}
	}
}
