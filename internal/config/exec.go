package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/drorch/drorch/internal/secret"
)

// DefaultExecTimeout bounds an exec source's backup or restore command that
// sets no timeout of its own.
const DefaultExecTimeout = 6 * time.Hour

// ExecCommand is a command of an exec source: the backup command writes the
// data set to its stdout, the restore command reads it back on its stdin.
type ExecCommand struct {
	Command []string      `yaml:"command"`
	Timeout time.Duration `yaml:"timeout"`
	// Env is added to the command's environment, after the DRORCH_*
	// variables drorch sets.
	Env map[string]string `yaml:"env"`
	// SecretEnv is added too, each value read from a reference
	// (env:NAME, file:PATH): a password the command needs reaches it in
	// its environment, never on a command line, and is cleaned from any
	// output quoted in an error.
	SecretEnv map[string]secret.Secret `yaml:"secretEnv"`
}

func (c *ExecCommand) setDefaults() { c.Timeout = DefaultExecTimeout }

func (c ExecCommand) Format(f fmt.State, verb rune) { type plain ExecCommand; formatPlain(f, plain(c)) }

// DRORCH_ is drorch's own: the configured env must not shadow it.
var execEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validateExec checks the fields of an exec source (driver: exec); for any
// other driver it refuses the exec-only fields.
func (s *Source) validateExec(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	if s.Driver != "exec" {
		if s.Backup != nil {
			d.errorf(f("backup"), "is for driver: exec only")
		}
		if s.Restore != nil {
			d.errorf(f("restore"), "is for driver: exec only")
		}
		return
	}
	if s.Path != "" {
		d.errorf(f("path"), "is not used by driver: exec (its data is the backup command's stdout); leave it out")
	}
	if s.Backup == nil {
		d.errorf(f("backup"), `required for driver: exec: {command: [...]}, a command that writes the data set to its stdout`)
	} else {
		s.Backup.validate(d, f("backup"))
	}
	// The restore command may be left out at a site that is only backed
	// up; a restore there says so.
	if s.Restore != nil {
		s.Restore.validate(d, f("restore"))
	}
}

func (c *ExecCommand) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	switch {
	case len(c.Command) == 0:
		d.errorf(f("command"), "required: the command and its arguments, as a list")
	case c.Command[0] == "":
		d.errorf(f("command"), "the command is empty")
	}
	if c.Timeout != 0 && c.Timeout < time.Second {
		d.errorf(f("timeout"), "must be at least 1s, got %s", c.Timeout)
	}
	check := func(key, name string) {
		p := join(f(key), name)
		switch {
		case !execEnvName.MatchString(name):
			d.errorf(p, "not a valid environment variable name")
		case strings.HasPrefix(name, "DRORCH_"):
			d.errorf(p, "DRORCH_* variables are set by drorch; choose another name")
		}
	}
	for _, name := range sortedKeys(c.Env) {
		check("env", name)
		if _, ok := c.SecretEnv[name]; ok {
			d.errorf(join(f("secretEnv"), name), "is also set in env; give it once")
		}
	}
	for _, name := range sortedKeys(c.SecretEnv) {
		check("secretEnv", name)
		if c.SecretEnv[name].Ref() == "" {
			d.errorf(join(f("secretEnv"), name), `required: a reference "env:NAME" or "file:PATH"`)
		}
	}
}
