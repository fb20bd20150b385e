// Package exec switches a resource that drorch has no driver for by running
// the operator's commands: one that sets the mode, one that reports it.
//
// The set command gets the mode ("read-only" or "read-write") twice: as its
// last argument and as the environment variable DRORCH_MODE. It must be
// idempotent — drorch sets a mode again after a retry or a resumed failover —
// and must return only once the mode is in force. The status command must
// print the mode in force ("read-only" or "read-write") on its standard output
// and exit 0; surrounding white space is ignored. A status command is
// required: a driver that only remembered the last mode it set would report a
// mode nobody checked, and would forget it when the worker restarts.
//
// Exit status: 0 is success. Anything else fails the call, with the exit
// status and the last 2 KiB of the command's output (stdout and stderr) in
// the error, which goes into the workflow's history. That output is cleaned
// first (package redact): URL query strings and user information, and
// credential assignments (password=…, Authorization: …) are masked, and the
// activities mask the config's secret values; still, commands should not
// print secrets. A failure is transient (Temporal retries it), except
// these statuses from sysexits.h, which no retry can fix or which carry a
// meaning drorch acts on:
//
//	64 EX_USAGE, 65 EX_DATAERR, 78 EX_CONFIG   permanent (InvalidConfig)
//	77 EX_NOPERM                               permanent (AccessDenied)
//	126, 127 (not executable, not found)       permanent (InvalidConfig)
//	68 EX_NOHOST, 69 EX_UNAVAILABLE            transient, unreachable: an
//	                                           unplanned failover records the
//	                                           resource as not fenced and goes on
//
// 75 EX_TEMPFAIL and every other status are transient.
//
// Each command runs in its own process group. When the timeout passes or the
// caller cancels, the whole group is killed with SIGKILL, so a script's
// children die with it; a command that escapes the group (setsid, a daemon)
// is not drorch's to stop.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/redact"
)

// Config says which commands to run and how.
type Config struct {
	SetMode []string      // argv; the mode is appended as the last argument and set as DRORCH_MODE
	Status  []string      // argv; prints "read-only" or "read-write"
	Env     []string      // KEY=VALUE added to the worker's environment
	Dir     string        // working directory (default: the worker's)
	Timeout time.Duration // bounds each command (default 60s); then its process group is killed
}

// ModeEnv is the environment variable that carries the mode to the set command.
const ModeEnv = "DRORCH_MODE"

const (
	defaultTimeout = 60 * time.Second

	// tailSize is how much of a failed command's output is kept to clean
	// and cut to redact.TailSize for the error: more than that, so that a
	// secret the cut goes through is still recognised.
	tailSize = 2*redact.TailSize + 1<<10
	// maxStatusOutput bounds what is kept of the status command's stdout;
	// the answer is one word.
	maxStatusOutput = 4 << 10
	// waitDelay bounds the wait for the output pipes once the command has
	// exited or been killed: a child that left the process group may hold them.
	waitDelay = 5 * time.Second
)

type command struct {
	set, status []string
	env         []string
	dir         string
	timeout     time.Duration
	describe    string
}

var _ access.Access = (*command)(nil)

// New returns the access driver for cfg. It checks the configuration but runs
// nothing.
func New(cfg Config) (access.Access, error) {
	if err := cfg.validate(); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("exec access: %w", err))
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, ModeEnv+"=") {
			env = append(env, kv)
		}
	}
	return &command{
		set:      cfg.SetMode,
		status:   cfg.Status,
		env:      append(env, cfg.Env...),
		dir:      cfg.Dir,
		timeout:  cfg.Timeout,
		describe: "exec " + cfg.SetMode[0],
	}, nil
}

// validate reports every problem with cfg at once, each naming its field.
func (cfg Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if len(cfg.SetMode) == 0 || cfg.SetMode[0] == "" {
		bad("set mode", "is required: the command (argv) that sets the mode")
	}
	if len(cfg.Status) == 0 || cfg.Status[0] == "" {
		bad("status", "is required: the command (argv) that prints the mode in force")
	}
	for i, kv := range cfg.Env {
		key, _, ok := strings.Cut(kv, "=")
		switch {
		case !ok || key == "":
			// The entry is not echoed: it may hold a value meant to stay private.
			bad(fmt.Sprintf("env[%d]", i), "must be KEY=VALUE")
		case key == ModeEnv:
			bad(fmt.Sprintf("env[%d]", i), "%s is set by drorch", ModeEnv)
		}
	}
	if cfg.Timeout < 0 {
		bad("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	return errors.Join(errs...)
}

func (c *command) Describe() string { return c.describe }

func (c *command) SetMode(ctx context.Context, mode access.Mode) error {
	if _, err := access.ParseMode(string(mode)); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("set mode with %s: %w", c.describe, err))
	}
	argv := append(append([]string(nil), c.set...), string(mode))
	_, err := c.run(ctx, fmt.Sprintf("set %s with %s", mode, c.describe), argv, ModeEnv+"="+string(mode), false)
	return err
}

func (c *command) Status(ctx context.Context) (access.Mode, error) {
	what := "status of " + c.describe
	out, err := c.run(ctx, what, c.status, "", true)
	if err != nil {
		return "", err
	}
	word := strings.TrimSpace(out)
	mode, err := access.ParseMode(word)
	if err != nil {
		if len(word) > 200 {
			word = word[:200] + "…"
		}
		return "", drivers.Permanentf(drivers.ReasonInvalidConfig,
			"%s: the status command %s printed %q on stdout, want %q or %q", what, c.status[0], word, access.ReadOnly, access.ReadWrite)
	}
	return mode, nil
}

// run runs argv and returns its stdout when wantStdout is set.
func (c *command) run(ctx context.Context, what string, argv []string, extraEnv string, wantStdout bool) (string, error) {
	runCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	cmd := osexec.CommandContext(runCtx, argv[0], argv[1:]...)
	cmd.Env = c.env
	if extraEnv != "" {
		cmd.Env = append(append([]string(nil), c.env...), extraEnv)
	}
	cmd.Dir = c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The group's id is the leader's pid (Setpgid with Pgid 0).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	var (
		tail   = &tailBuffer{redact.TailWriter{Max: tailSize}}
		stdout = &limitedBuffer{max: maxStatusOutput}
	)
	if wantStdout {
		cmd.Stdout = io.MultiWriter(stdout, tail)
	} else {
		cmd.Stdout = tail // the same writer for both: one pipe, output in the order it was written
	}
	cmd.Stderr = tail

	err := cmd.Run()
	if errors.Is(err, osexec.ErrWaitDelay) {
		err = nil // it exited 0; only a child that left the group still holds its output
	}
	if err == nil {
		return stdout.String(), nil
	}

	output := tail.String()
	var exit *osexec.ExitError
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("%s: %w%s", what, ctx.Err(), output)
	case errors.Is(runCtx.Err(), context.DeadlineExceeded):
		return "", fmt.Errorf("%s: timed out after %s, process group killed%s", what, c.timeout, output)
	case errors.As(err, &exit):
		return "", classifyExit(what, exit, output)
	case cmd.Process == nil:
		// It did not start: not found, not executable, no such directory.
		if c.dir != "" {
			// A missing directory is reported as the command's own ENOENT.
			if _, serr := os.Stat(c.dir); serr != nil {
				err = fmt.Errorf("working directory: %w", serr)
			}
		}
		return "", drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: start: %w", what, err))
	default:
		return "", fmt.Errorf("%s: %w%s", what, err, output)
	}
}

func classifyExit(what string, exit *osexec.ExitError, output string) error {
	err := fmt.Errorf("%s: %s%s", what, exit, output)
	if !exit.Exited() {
		return err // killed by a signal drorch did not send
	}
	switch code := exit.ExitCode(); code {
	case 64, 65, 78, 126, 127: // EX_USAGE, EX_DATAERR, EX_CONFIG; not executable, not found
		return drivers.Permanent(drivers.ReasonInvalidConfig, err)
	case 77: // EX_NOPERM
		return drivers.Permanent(drivers.ReasonAccessDenied, err)
	case 68, 69: // EX_NOHOST, EX_UNAVAILABLE
		return fmt.Errorf("%s: %w: %s%s", what, drivers.ErrUnreachable, exit, output)
	}
	return err
}

// tailBuffer is a command's output kept for its error.
type tailBuffer struct{ redact.TailWriter }

// String returns the tail as the end of an error message: "" when there was
// no output, else "; output" and the text on the following lines.
func (t *tailBuffer) String() string {
	text, cut := t.Tail(nil)
	if text == "" {
		return ""
	}
	if cut {
		return "; output ends with:\n…" + text
	}
	return "; output:\n" + text
}

// limitedBuffer keeps the first max bytes written to it and discards the rest
// without failing the command.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		l.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return l.buf.String() }
