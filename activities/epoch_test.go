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

	// The same with the MAC stripped, as an older drorch wrote the file.
	old := append([]byte("{\n"), body[bytes.Index(body, []byte("\n  \"epoch\""))+1:]...)
	if err := st.Put(ctx, racePlan+"/epoch.json", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	_, err = a.GetSiteState(ctx, SiteStateInput{Plan: racePlan, Site: "primary"})
	wantAppError(t, "the state of a site with an unauthenticated epoch.json", err, "Corrupt", "Sealing an older epoch.json")
}
