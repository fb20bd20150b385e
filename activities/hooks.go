package activities

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/redact"
)

// RunHooksInput names the hooks of a recovery step to run.
type RunHooksInput struct {
	Plan  string `json:"plan"`
	Step  string `json:"step"`
	Phase string `json:"phase"` // before or after
}

// defaultHookTimeout bounds a hook that sets no timeout of its own.
const defaultHookTimeout = 5 * time.Minute

// RunHooks runs the hooks of one phase of a recovery step, in order. A hook
// fails the step unless its command exits 0 or its URL answers 2xx; the error
// carries the end of its output (or of the answer's body), at most
// redact.TailSize bytes, cleaned of URL query strings and user information,
// credential assignments and every secret value of the config: the error
// goes into the workflow's history.
func (a *Activities) RunHooks(ctx context.Context, in RunHooksInput) error {
	p, err := a.plan(in.Plan)
	if err != nil {
		return temporalError(err)
	}
	for _, s := range p.Steps {
		if s.Name != in.Step {
			continue
		}
		hooks := s.Before
		if in.Phase == "after" {
			hooks = s.After
		}
		for i, h := range hooks {
			if err := runHook(ctx, h, nil, a.cfg.SecretValues()); err != nil {
				return temporalError(fmt.Errorf("step %s, %s hook %d: %w", s.Name, in.Phase, i+1, err))
			}
			a.log.Info().Str("plan", in.Plan).Str("step", s.Name).Str("phase", in.Phase).Int("hook", i+1).Msg("hook passed")
		}
		return nil
	}
	return temporalError(drivers.Permanentf(drivers.ReasonInvalidInput, "plan %s has no recovery step %q", in.Plan, in.Step))
}

// runHook runs one hook; env is added to a command's environment (a
// webhook does not see it).
func runHook(ctx context.Context, h *config.Hook, env, secrets []string) error {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = defaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if len(h.Exec) > 0 {
		out := &tailBuffer{redact.TailWriter{Max: 2*redact.TailSize + 1024}} // room for a secret the cut goes through
		cmd := exec.CommandContext(ctx, h.Exec[0], h.Exec[1:]...)
		cmd.Stdout, cmd.Stderr = out, out
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%s timed out after %s%s", h.Exec[0], timeout, out.text(secrets))
			}
			return fmt.Errorf("%s: %v%s", h.Exec[0], err, out.text(secrets))
		}
		return nil
	}
	method := h.Method
	if method == "" {
		method = http.MethodGet
	}
	where := redact.URL(h.HTTP)
	req, err := http.NewRequestWithContext(ctx, method, h.HTTP, nil)
	if err != nil {
		// The error quotes the URL whole: say only where.
		return drivers.Permanentf(drivers.ReasonInvalidConfig, "%s %s: not a valid request URL", method, where)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// err quotes the URL with its query: keep its text, cleaned, and
		// not the error itself (its chain would reach the history whole).
		return errors.New(redact.Text(fmt.Sprintf("%s %s: %v", method, where, err), secrets))
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2*redact.TailSize))
	if resp.StatusCode/100 != 2 {
		text, _ := redact.Tail(body, false, secrets)
		return fmt.Errorf("%s %s: %s: %s", method, where, resp.Status, text)
	}
	return nil
}

// tailBuffer is a command's output kept for its error.
type tailBuffer struct{ redact.TailWriter }

// text is the cleaned end of the output for an error: "" when there was
// none, else ": " and the text.
func (t *tailBuffer) text(secrets []string) string {
	s, cut := t.Tail(secrets)
	switch {
	case s == "":
		return ""
	case cut:
		return ": output ends with: …" + s
	}
	return ": " + s
}

// cleanAccess cleans the errors of an access driver before they reach a
// history: a driver's error may quote a command's output or a server's
// answer (the exec and http drivers do), which may hold a secret of the
// config or a URL with a token.
type cleanAccess struct {
	access.Access
	secrets []string
}

func (c cleanAccess) SetMode(ctx context.Context, mode access.Mode) error {
	return cleanError(c.Access.SetMode(ctx, mode), c.secrets)
}

func (c cleanAccess) Status(ctx context.Context) (access.Mode, error) {
	m, err := c.Access.Status(ctx)
	return m, cleanError(err, c.secrets)
}

// cleanError returns err with its text cleaned by redact.Text. When that
// changes it, the result keeps err's class (permanent and its reason,
// unreachable, not found, cancelled) but not err itself: Temporal records
// an error's whole chain, and the original text is what must not go there.
func cleanError(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := redact.Text(msg, secrets)
	if clean == msg {
		return err
	}
	c := &cleanedError{msg: clean}
	for _, class := range []error{drivers.ErrUnreachable, drivers.ErrNotFound, drivers.ErrPreconditionFailed, access.ErrPartial, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, class) {
			c.class = class
			break
		}
	}
	if reason, ok := drivers.IsPermanent(err); ok {
		return drivers.Permanent(reason, c)
	}
	return c
}

// cleanedError is a cleaned error text that still matches its class with
// errors.Is.
type cleanedError struct {
	msg   string
	class error
}

func (e *cleanedError) Error() string { return e.msg }
func (e *cleanedError) Unwrap() error { return e.class }
