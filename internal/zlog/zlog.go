// Package zlog sets up zerolog for drorch's binaries and adapts it to Temporal's
// logger interface, so the SDK, workflows and activities all log through one
// zerolog logger.
package zlog

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"go.temporal.io/sdk/log"
	"golang.org/x/term"
)

// New returns a logger writing to w at the given level ("debug", "info", "warn",
// "error"). A terminal gets human-readable lines; anything else gets JSON.
func New(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// Adapter implements Temporal's log.Logger, log.WithLogger and
// log.WithSkipCallers on a zerolog logger.
type Adapter struct {
	zl zerolog.Logger
}

var (
	_ log.Logger          = (*Adapter)(nil)
	_ log.WithLogger      = (*Adapter)(nil)
	_ log.WithSkipCallers = (*Adapter)(nil)
)

// Temporal returns zl behind Temporal's logger interface.
func Temporal(zl zerolog.Logger) *Adapter { return &Adapter{zl: zl} }

func (a *Adapter) Debug(msg string, keyvals ...any) { a.log(a.zl.Debug(), msg, keyvals) }
func (a *Adapter) Info(msg string, keyvals ...any)  { a.log(a.zl.Info(), msg, keyvals) }
func (a *Adapter) Warn(msg string, keyvals ...any)  { a.log(a.zl.Warn(), msg, keyvals) }
func (a *Adapter) Error(msg string, keyvals ...any) { a.log(a.zl.Error(), msg, keyvals) }

// With returns a logger that adds keyvals to every entry.
func (a *Adapter) With(keyvals ...any) log.Logger {
	return &Adapter{zl: a.zl.With().Fields(fields(keyvals)).Logger()}
}

// WithCallerSkip is accepted for the interface; zerolog here does not record
// callers, so there is nothing to skip.
func (a *Adapter) WithCallerSkip(int) log.Logger { return a }

func (a *Adapter) log(e *zerolog.Event, msg string, keyvals []any) {
	if e == nil {
		return
	}
	e.Fields(fields(keyvals)).Msg(msg)
}

// fields turns Temporal's alternating key/value list into zerolog fields. A key
// that is not a string, or a trailing key without value, is kept under a
// generated name rather than dropped.
func fields(keyvals []any) []any {
	out := make([]any, 0, len(keyvals)+1)
	for i := 0; i < len(keyvals); i += 2 {
		key, ok := keyvals[i].(string)
		if !ok {
			key = fmt.Sprint(keyvals[i])
		}
		if i+1 >= len(keyvals) {
			out = append(out, "extra", keyvals[i])
			break
		}
		out = append(out, key, keyvals[i+1])
	}
	return out
}
