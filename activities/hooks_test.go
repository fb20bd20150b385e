package activities

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/redact"
)

const hookSecret = "pg-Pa55word-of-the-plan"

// A failing hook's output goes into the history: capped, and without URL
// query strings, user information or the plan's secrets.
func TestHookOutputIsCappedAndRedacted(t *testing.T) {
	script := `for i in $(seq 1 400); do echo "line $i of noise noise noise"; done
echo "calling https://deploy:hunter22@hooks.example.com/ready?token=abc123 with ` + hookSecret + `" >&2
exit 3`
	err := runHook(context.Background(), &config.Hook{Exec: []string{"sh", "-c", script}}, nil, []string{hookSecret})
	if err == nil {
		t.Fatal("a hook exiting 3 passed")
	}
	msg := err.Error()
	for _, leak := range []string{hookSecret, "hunter22", "token=abc123", "abc123"} {
		if strings.Contains(msg, leak) {
			t.Errorf("the error shows %q: %s", leak, msg)
		}
	}
	if !strings.Contains(msg, "https://hooks.example.com/ready?[redacted]") || !strings.Contains(msg, "exit status 3") {
		t.Errorf("the error lost what went wrong: %s", msg)
	}
	if len(msg) > redact.TailSize+200 {
		t.Errorf("the error holds %d bytes of output, want at most about %d", len(msg), redact.TailSize)
	}
	if !strings.Contains(msg, "output ends with") {
		t.Errorf("the error does not say its output was cut: %s", msg[:200])
	}
}

func TestHTTPHookErrorHasNoQueryString(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready; retry with password=%s", hookSecret)
	}))
	defer srv.Close()
	err := runHook(context.Background(), &config.Hook{HTTP: srv.URL + "/ready?sig=s3cr3tsig"}, nil, []string{hookSecret})
	if err == nil || strings.Contains(err.Error(), "s3cr3tsig") || strings.Contains(err.Error(), hookSecret) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("error %v", err)
	}
	srv.Close()
	err = runHook(context.Background(), &config.Hook{HTTP: srv.URL + "/ready?sig=s3cr3tsig"}, nil, nil)
	if err == nil || strings.Contains(err.Error(), "s3cr3tsig") {
		t.Fatalf("a refused connection: error %v", err)
	}
}

func TestCleanErrorKeepsTheClass(t *testing.T) {
	perm := drivers.Permanentf(drivers.ReasonAccessDenied, "set read-only: output: %s", hookSecret)
	got := cleanError(perm, []string{hookSecret})
	if reason, ok := drivers.IsPermanent(got); !ok || reason != drivers.ReasonAccessDenied || strings.Contains(got.Error(), hookSecret) {
		t.Fatalf("permanent: %v (%q, %v)", got, reason, ok)
	}
	dark := fmt.Errorf("status: %w: output %s", drivers.ErrUnreachable, hookSecret)
	got = cleanError(dark, []string{hookSecret})
	if !drivers.IsUnreachable(got) || strings.Contains(got.Error(), hookSecret) {
		t.Fatalf("unreachable: %v", got)
	}
	// Temporal records the chain: nothing in it may hold the secret.
	for e := got; e != nil; e = errors.Unwrap(e) {
		if strings.Contains(e.Error(), hookSecret) {
			t.Fatalf("the chain holds the secret: %v", e)
		}
	}
	plain := errors.New("nothing to hide")
	if cleanError(plain, []string{hookSecret}) != plain {
		t.Fatal("an error with nothing to clean was rebuilt")
	}
}

func TestTemporalErrorLocalFaults(t *testing.T) {
	for _, tc := range []struct {
		err          error
		nonRetryable bool
		typ          string
	}{
		{fmt.Errorf("read %q: %w", "a.img", syscall.EIO), true, drivers.ReasonIOError},
		{fmt.Errorf("write: %w", syscall.ENOSPC), true, drivers.ReasonNoSpace},
		{fmt.Errorf("write: %w", syscall.EROFS), true, drivers.ReasonReadOnlyFS},
		{fmt.Errorf("open: %w", syscall.EACCES), true, drivers.ReasonAccessDenied},
		{fmt.Errorf("read: %w", syscall.EINTR), false, ""},
		{errors.New("connection reset"), false, ""},
	} {
		err := temporalError(tc.err)
		var app *temporal.ApplicationError
		isApp := errors.As(err, &app)
		if isApp != tc.nonRetryable || (isApp && (!app.NonRetryable() || app.Type() != tc.typ)) {
			t.Errorf("%v: got %v", tc.err, err)
		}
		if isApp && !strings.Contains(app.Error(), "then run the operation again") {
			t.Errorf("%v: no advice in %q", tc.err, app.Error())
		}
	}
}

func TestPlanOfAndBudget(t *testing.T) {
	if got := planOf([]any{CommitInput{Plan: "files"}}); got != "files" {
		t.Fatalf("planOf = %q", got)
	}
	if got := planOf([]any{42}); got != "" {
		t.Fatalf("planOf(42) = %q", got)
	}
	if got := budgetOf(nil)("files"); got != config.DefaultRetryBudget {
		t.Fatalf("default budget %s", got)
	}
}
