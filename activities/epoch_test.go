package activities

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/drivers"
)

func wantAppError(t *testing.T, what string, err error, typ, text string) {
	t.Helper()
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != typ || !app.NonRetryable() || !strings.Contains(err.Error(), text) {
		t.Fatalf("%s: got %v, want a non-retryable %s error saying %q", what, err, typ, text)
	}
}

// SetEpoch on real MinIO: concurrent raises are all applied, a retry of one
// is not applied twice, a site past the epoch to adopt refuses, the epoch
// does not wrap, and a tampered epoch.json is refused by every reader.
func TestSetEpochCompareAndSwap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := newRaceEnv(t)
	a := env.a
	if _, err := a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: "primary"}); err != nil {
		t.Fatal(err)
	}

	// Raises from several writers at once: each is applied, none lost.
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Active: "primary", Op: fmt.Sprintf("switch-%d", i), Reason: "concurrent"})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	r, err := a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	e, err := r.GetEpoch(ctx)
	if err != nil || e.Epoch != 1+n {
		t.Fatalf("after %d raises from epoch 1: %+v %v, want epoch %d", n, e, err, 1+n)
	}
	// The retry of the last one, whose answer was lost, changes nothing.
	again, err := a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Active: "primary", Op: e.Op, Reason: "concurrent"})
	if err != nil || again.Epoch != e.Epoch {
		t.Fatalf("a retried raise: %+v %v, want epoch %d unchanged", again, err, e.Epoch)
	}

	_, err = a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Op: "learn", Adopt: 3, Reason: "learn an older epoch"})
	wantAppError(t, "adopting an epoch below the site's", err, "Fenced", "past epoch 3 it was to learn")

	// At the top of the range the epoch cannot be raised, only kept.
	if _, err := a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Op: "top", Adopt: math.MaxUint64, Reason: "hand-set"}); err != nil {
		t.Fatal(err)
	}
	_, err = a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Op: "wrap", Reason: "one more"})
	wantAppError(t, "raising the highest epoch", err, "InvalidInput", "cannot be raised")
	if e, _ := r.GetEpoch(ctx); e.Epoch != math.MaxUint64 {
		t.Fatalf("epoch %d after a refused raise", e.Epoch)
	}

	// Someone with write access to the bucket but not the key lowers it,
	// while a backup is under way.
	in := env.backupUntilCommit(ctx, t, 0)
	st := env.stores["primary"]
	rc, err := st.Get(ctx, racePlan+"/epoch.json")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	forged := bytes.Replace(body, []byte(fmt.Sprintf(`"epoch": %d`, uint64(math.MaxUint64))), []byte(`"epoch": 1`), 1)
	if err := st.Put(ctx, racePlan+"/epoch.json", bytes.NewReader(forged), int64(len(forged))); err != nil {
		t.Fatal(err)
	}
	_, err = a.GetSiteState(ctx, SiteStateInput{Plan: racePlan, Site: "primary"})
	wantAppError(t, "the state of a site with a forged epoch.json", err, "Corrupt", "MAC does not match")
	_, err = a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Op: "after-forgery", Reason: "failover"})
	wantAppError(t, "raising a forged epoch", err, "Corrupt", "MAC does not match")
	_, err = a.Commit(ctx, in)
	wantAppError(t, "committing a backup against a forged epoch", err, "Corrupt", "MAC does not match")

	// The same with the MAC stripped, as an older drorch wrote the file:
	// sealing began here with the first write, so it is refused.
	old := append([]byte("{\n"), body[bytes.Index(body, []byte("\n  \"epoch\""))+1:]...)
	if err := st.Put(ctx, racePlan+"/epoch.json", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	_, err = a.GetSiteState(ctx, SiteStateInput{Plan: racePlan, Site: "primary"})
	wantAppError(t, "the state of a site with an unauthenticated epoch.json", err, "Corrupt", "after sealing began")
}

// A keyed plan upgraded from a drorch that wrote epoch.json without a MAC
// keeps working with no operator step: the older file is trusted until the
// first write (here a backup's commit) seals it and creates epoch.sealed;
// from then on an unsealed file is refused.
func TestEpochSealedOnUpgrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := newRaceEnv(t)
	a := env.a
	st := env.stores["primary"]
	if err := st.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	put := func(key string, b []byte) {
		t.Helper()
		if err := st.Put(ctx, racePlan+"/"+key, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
	get := func(key string) ([]byte, error) {
		rc, err := st.Get(ctx, racePlan+"/"+key)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return io.ReadAll(rc)
	}
	// What the older drorch left after a failover and a failback.
	legacy := []byte("{\n  \"epoch\": 3,\n  \"site\": \"primary\",\n  \"active\": \"primary\",\n  \"op\": \"failback-1\",\n  \"reason\": \"failback\",\n  \"updated\": \"2026-01-02T03:04:05Z\"\n}\n")
	put("epoch.json", legacy)

	state, err := a.GetSiteState(ctx, SiteStateInput{Plan: racePlan, Site: "primary"})
	if err != nil || state.Epoch.Epoch != 3 || state.Epoch.Active != "primary" {
		t.Fatalf("the state of a site with an older drorch's epoch.json: %+v %v", state, err)
	}
	if _, err := get("epoch.sealed"); !drivers.IsNotFound(err) {
		t.Fatalf("reading the epoch created the seal marker (%v)", err)
	}

	// A backup runs as before, and its commit seals the file.
	in := env.backupUntilCommit(ctx, t, 0)
	if in.Epoch != 3 {
		t.Fatalf("the backup started under epoch %d, want 3", in.Epoch)
	}
	if _, err := a.Commit(ctx, in); err != nil {
		t.Fatalf("a backup after the upgrade: %v", err)
	}
	sealed, err := get("epoch.json")
	if err != nil || !bytes.HasPrefix(sealed, []byte("{\n  \"mac\": \"hmac-sha256:")) {
		t.Fatalf("epoch.json after the first commit is not sealed (%v):\n%s", err, sealed)
	}
	if _, err := get("epoch.sealed"); err != nil {
		t.Fatalf("no seal marker after the first commit: %v", err)
	}
	state, err = a.GetSiteState(ctx, SiteStateInput{Plan: racePlan, Site: "primary"})
	if err != nil || state.Epoch.Epoch != 3 || state.Latest != in.Point {
		t.Fatalf("the state after the first commit: %+v %v, want epoch 3 and point %s", state, err, in.Point)
	}

	// Someone without the key puts an unsealed file back.
	put("epoch.json", bytes.Replace(legacy, []byte(`"epoch": 3`), []byte(`"epoch": 9`), 1))
	_, err = a.GetSiteState(ctx, SiteStateInput{Plan: racePlan, Site: "primary"})
	wantAppError(t, "the state of a site with an unsealed epoch.json after sealing began", err, "Corrupt", "after sealing began")
	_, err = a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: "primary", Active: "secondary", Op: "failover-2", Reason: "failover"})
	wantAppError(t, "raising an unsealed epoch.json after sealing began", err, "Corrupt", "after sealing began")
}
