package config

import (
	"strings"
	"testing"
	"time"
)

func TestParseSnapshot(t *testing.T) {
	setSecrets(t)
	doc := strings.Replace(valid, withSourceHooks, `primary: {driver: dir, path: /srv/data, snapshot: reflink}`, 1)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if s := cfg.Plans["files"].Source["primary"].Snapshot; s == nil || !s.Reflink || s.Mode() != "reflink" {
		t.Fatalf("snapshot = %+v, want reflink", s)
	}

	doc = strings.Replace(valid, withSourceHooks, `primary:
        driver: dir
        path: /srv/data
        snapshot:
          create:
            - exec: [lvcreate, -s, -n, drorch, -L, 5G, vg/data]
            - {exec: [mount, -o, ro, /dev/vg/drorch, /mnt/snap], timeout: 20s}
          path: /mnt/snap
          remove: [{exec: [umount, /mnt/snap]}, {exec: [lvremove, -y, vg/drorch]}]
          timeout: 2m`, 1)
	cfg, err = Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Plans["files"].Source["primary"].Snapshot
	if s == nil || s.Reflink || s.Mode() != "commands" || s.Path != "/mnt/snap" || len(s.Create) != 2 || len(s.Remove) != 2 || s.Timeout != 2*time.Minute {
		t.Fatalf("snapshot = %+v", s)
	}
	create := s.Hooks("create")
	if create[0].Timeout != 2*time.Minute || create[1].Timeout != 20*time.Second || create[0].Exec[0] != "lvcreate" {
		t.Fatalf("create hooks = %+v %+v: want the snapshot's timeout where a hook sets none", create[0], create[1])
	}
	if s.Create[0].Timeout != 0 {
		t.Fatal("Hooks changed the config's own hook")
	}
	if r := s.Hooks("remove"); r[1].Exec[0] != "lvremove" {
		t.Fatalf("remove hooks = %+v", r)
	}
}

func TestParseSnapshotErrors(t *testing.T) {
	setSecrets(t)
	const at = "drorch.yaml:"
	cases := []struct{ snapshot, want string }{
		{`lvm`, `plans.files.source.primary.snapshot: must be "reflink" or a mapping {create: [...], path: ..., remove: [...]}, got "lvm"`},
		{`[reflink]`, "plans.files.source.primary.snapshot: must be a mapping of keys to values, got a list"},
		{`{path: /mnt/snap, remove: [{exec: [umount, /mnt/snap]}]}`, "plans.files.source.primary.snapshot.create: required: the commands that make the snapshot"},
		{`{path: /mnt/snap, create: [{exec: [mount]}]}`, "plans.files.source.primary.snapshot.remove: required: the commands that drop the snapshot"},
		{`{create: [{exec: [a]}], remove: [{exec: [b]}]}`, "plans.files.source.primary.snapshot.path: required"},
		{`{create: [{exec: [a]}], path: mnt/snap, remove: [{exec: [b]}]}`, `plans.files.source.primary.snapshot.path: must be an absolute path, got "mnt/snap"`},
		{`{create: [{exec: [a]}], path: /srv/data, remove: [{exec: [b]}]}`, "plans.files.source.primary.snapshot.path: is the source path itself"},
		{`{create: [{}], path: /mnt/snap, remove: [{exec: [b]}]}`, "plans.files.source.primary.snapshot.create[0]: required: exec (a command) or http (a URL)"},
		{`{create: [{exec: [a]}], path: /mnt/snap, remove: [{exec: [b], timeout: soon}]}`, "plans.files.source.primary.snapshot.remove[0].timeout: must be a duration"},
		{`{create: [{exec: [a]}], path: /mnt/snap, remove: [{exec: [b]}], timeout: 10ms}`, "plans.files.source.primary.snapshot.timeout: must be at least 1s"},
		{`{create: [{exec: [a]}], path: /mnt/snap, remove: [{exec: [b]}], keep: true}`, "plans.files.source.primary.snapshot.keep: unknown key; allowed: create, path, remove, timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			doc := strings.Replace(valid, withSourceHooks, `primary: {driver: dir, path: /srv/data, snapshot: `+tc.snapshot+`}`, 1)
			_, err := Parse("drorch.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), at) {
				t.Fatalf("err = %v, want %q at a line of the file", err, tc.want)
			}
		})
	}
}

// A snapshot setting on another driver is refused at its field.
func TestParseSnapshotOnlyForDir(t *testing.T) {
	src := &Source{Driver: "exec", Path: "/srv/data", Snapshot: &Snapshot{Reflink: true}}
	d := newDecoder("drorch.yaml", options{})
	for i, p := range []string{"plans", "plans.files", "plans.files.source", "plans.files.source.primary", "plans.files.source.primary.snapshot"} {
		d.lines[p] = 3 + i
	}
	src.Snapshot.validate(d, "plans.files.source.primary.snapshot", src)
	err := d.err()
	if err == nil || !strings.Contains(err.Error(), "drorch.yaml:7: plans.files.source.primary.snapshot: is for the dir driver only") {
		t.Fatalf("err = %v", err)
	}
}
