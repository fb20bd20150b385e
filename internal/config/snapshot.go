package config

import (
	"fmt"
	"path/filepath"
	"reflect"
	"time"
)

// SnapshotReflink is the scalar form of a dir source's snapshot setting:
// drorch itself makes a copy-on-write reflink clone of the tree.
const SnapshotReflink = "reflink"

// Snapshot makes a dir source back up a point-in-time view of its tree
// instead of the live tree. Either drorch makes a reflink clone
// ("snapshot: reflink", Reflink set), or the operator's commands make a
// snapshot (LVM, ZFS, btrfs...) that is read at Path: create runs before the
// tree is listed, remove when the backup ends, committed or not.
type Snapshot struct {
	Reflink bool `yaml:"-"`
	// Create makes the snapshot and leaves it readable at Path.
	Create []*Hook `yaml:"create"`
	// Path is where the snapshot's copy of the source tree is read.
	Path string `yaml:"path"`
	// Remove drops the snapshot; a failure is a warning of the backup.
	Remove []*Hook `yaml:"remove"`
	// Timeout bounds each create and remove hook that sets none of its own.
	Timeout time.Duration `yaml:"timeout"`
}

// Mode names the snapshot mode for messages: "reflink" or "commands".
func (s *Snapshot) Mode() string {
	if s.Reflink {
		return SnapshotReflink
	}
	return "commands"
}

// scalarForm is a section that may also be written as a single value, such
// as "snapshot: reflink"; the decoder calls fromScalar with the value.
type scalarForm interface {
	fromScalar(value string) error
}

var scalarFormType = reflect.TypeFor[scalarForm]()

func (s *Snapshot) fromScalar(v string) error {
	if v != SnapshotReflink {
		return fmt.Errorf(`must be "reflink" or a mapping {create: [...], path: ..., remove: [...]}, got %q`, v)
	}
	s.Reflink = true
	return nil
}

func (s *Snapshot) validate(d *decoder, path string, src *Source) {
	f := func(key string) string { return join(path, key) }
	if src.Driver != "" && src.Driver != "dir" {
		d.errorf(path, "is for the dir driver only; a %s source takes its own consistent copy", src.Driver)
		return
	}
	if s.Reflink {
		return
	}
	if len(s.Create) == 0 {
		d.errorf(f("create"), "required: the commands that make the snapshot and leave it at path (or write snapshot: reflink)")
	}
	if len(s.Remove) == 0 {
		d.errorf(f("remove"), "required: the commands that drop the snapshot; they run at the end of every backup, also a failed one")
	}
	switch p := s.Path; {
	case p == "":
		d.errorf(f("path"), "required: the absolute path where the snapshot shows the source tree")
	case !filepath.IsAbs(p):
		d.errorf(f("path"), "must be an absolute path, got %q", p)
	case filepath.Clean(p) != p:
		d.errorf(f("path"), "must be a clean path (%q), got %q", filepath.Clean(p), p)
	case p == "/":
		d.errorf(f("path"), `must not be "/"`)
	case p == src.Path:
		d.errorf(f("path"), "is the source path itself: give where the snapshot shows the tree (e.g. %s)", filepath.Join(filepath.Dir(p), ".snapshot"))
	}
	for key, hooks := range map[string][]*Hook{"create": s.Create, "remove": s.Remove} {
		for i, h := range hooks {
			p := fmt.Sprintf("%s[%d]", f(key), i)
			if h == nil {
				d.errorf(p, "required: exec (a command) or http (a URL)")
				continue
			}
			h.validate(d, p)
		}
	}
	if t := s.Timeout; t != 0 && t < time.Second {
		d.errorf(f("timeout"), "must be at least 1s, got %s", t)
	}
}

// Hooks returns the create or remove hooks with the snapshot's timeout
// filled in where a hook sets none.
func (s *Snapshot) Hooks(phase string) []*Hook {
	hooks := s.Create
	if phase == "remove" {
		hooks = s.Remove
	}
	out := make([]*Hook, len(hooks))
	for i, h := range hooks {
		c := *h
		if c.Timeout == 0 {
			c.Timeout = s.Timeout
		}
		out[i] = &c
	}
	return out
}
