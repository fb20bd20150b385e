package activities

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"syscall"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/config"
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
// carries the end of its output.
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
			if err := runHook(ctx, h); err != nil {
				return temporalError(fmt.Errorf("step %s, %s hook %d: %w", s.Name, in.Phase, i+1, err))
			}
			a.log.Info().Str("plan", in.Plan).Str("step", s.Name).Str("phase", in.Phase).Int("hook", i+1).Msg("hook passed")
		}
		return nil
	}
	return temporalError(drivers.Permanentf(drivers.ReasonInvalidInput, "plan %s has no recovery step %q", in.Plan, in.Step))
}

func runHook(ctx context.Context, h *config.Hook) error {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = defaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if len(h.Exec) > 0 {
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, h.Exec[0], h.Exec[1:]...)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			if ctx.Err() == context.DeadlineExceeded {
				return fmt.Errorf("%s timed out after %s: %s", h.Exec[0], timeout, tail(out.Bytes()))
			}
			return fmt.Errorf("%s: %v: %s", h.Exec[0], err, tail(out.Bytes()))
		}
		return nil
	}
	method := h.Method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequestWithContext(ctx, method, h.HTTP, nil)
	if err != nil {
		return drivers.Permanent(drivers.ReasonInvalidConfig, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, req.URL.Redacted(), resp.Status, tail(body))
	}
	return nil
}

// tail is the end of a command's output, for an error message.
func tail(b []byte) string {
	const n = 2048
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}
