package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestProtectionSettings(t *testing.T) {
	setSecrets(t)
	doc := edit(t, "    encryption: {key: env:DRORCH_FILES_KEY}\n", `    encryption: {key: env:DRORCH_FILES_KEY}
    schedule: {every: 15m, window: "22:00-04:00", timeZone: Europe/Berlin, jitter: 1m, paused: true}
    retention: {keepLast: 3, keepDaily: 7, keepWithin: 72h}
    standby: warm
    objectives: {rpo: 15m, rto: 5m}
`)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Plans["files"]
	if s := p.Schedule; s == nil || s.Every != 15*time.Minute || s.Window != "22:00-04:00" || !s.Paused || s.Jitter != time.Minute {
		t.Errorf("schedule = %+v", p.Schedule)
	}
	if r := p.RetentionPolicy(); r != (Retention{KeepLast: 3, KeepDaily: 7, KeepWithin: 72 * time.Hour}) {
		t.Errorf("retention = %+v", r)
	}
	if p.Standby != StandbyWarm || p.Objectives.RPO != 15*time.Minute || p.Objectives.RTO != 5*time.Minute {
		t.Errorf("standby %q, objectives %+v", p.Standby, p.Objectives)
	}
	if !slices.Equal(p.Secondaries, []string{"secondary"}) || !slices.Equal(p.Sites(), []string{"primary", "secondary"}) {
		t.Errorf("secondaries %v, sites %v", p.Secondaries, p.Sites())
	}

	cfg, err = Parse("drorch.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	p = cfg.Plans["files"]
	if p.Schedule != nil || p.RetentionPolicy() != DefaultRetention || p.Standby != StandbyCold {
		t.Errorf("defaults: schedule %v, retention %+v, standby %q", p.Schedule, p.RetentionPolicy(), p.Standby)
	}
}

func TestThreeSites(t *testing.T) {
	setSecrets(t)
	doc := edit(t,
		"plans:\n", `  remote:
    store: {driver: s3, endpoint: 127.0.0.1:9003, bucket: drorch, accessKey: env:DRORCH_PRIMARY_ACCESS_KEY, secretKey: env:DRORCH_PRIMARY_SECRET_KEY}
plans:
`,
		"    secondary: secondary\n", "    secondaries: [secondary, remote]\n")
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Plans["files"]
	if p.Secondary != "secondary" || !slices.Equal(p.Sites(), []string{"primary", "secondary", "remote"}) {
		t.Errorf("secondary %q, sites %v", p.Secondary, p.Sites())
	}
}

func TestProtectionErrors(t *testing.T) {
	const at = "    encryption: {key: env:DRORCH_FILES_KEY}\n"
	cases := []struct{ name, add, want string }{
		{"no every or cron", "    schedule: {paused: true}\n", `drorch.yaml:29: plans.files.schedule: give every (such as 15m) or cron`},
		{"both", "    schedule: {every: 1h, cron: \"0 2 * * *\"}\n", `drorch.yaml:29: plans.files.schedule.cron: give every or cron, not both`},
		{"too often", "    schedule: {every: 10s}\n", `drorch.yaml:29: plans.files.schedule.every: must be at least 1m0s, got 10s`},
		{"cron fields", "    schedule: {cron: \"0 2 * *\"}\n", `drorch.yaml:29: plans.files.schedule.cron: must have 5 fields`},
		{"window", "    schedule: {every: 1h, window: \"1-5\"}\n", `drorch.yaml:29: plans.files.schedule.window: must be HH:MM-HH:MM, such as 01:00-05:00, got "1-5"`},
		{"zone", "    schedule: {every: 1h, timeZone: Mars/Olympus}\n", `drorch.yaml:29: plans.files.schedule.timeZone: unknown time zone "Mars/Olympus"`},
		{"jitter", "    schedule: {every: 1h, jitter: 2h}\n", `drorch.yaml:29: plans.files.schedule.jitter: must be shorter than every (1h0m0s), got 2h0m0s`},
		{"retention empty", "    retention: {}\n", `drorch.yaml:29: plans.files.retention: keeps nothing but the newest point`},
		{"retention negative", "    retention: {keepDaily: -1}\n", `drorch.yaml:29: plans.files.retention.keepDaily: must be 0 or more, got -1`},
		{"standby", "    standby: hot\n", `drorch.yaml:29: plans.files.standby: must be cold or warm, got "hot"`},
		{"rpo", "    objectives: {rpo: 5s}\n", `drorch.yaml:29: plans.files.objectives.rpo: must be at least 1m, got 5s`},
		{"both secondaries", "    secondaries: [primary]\n", `drorch.yaml:29: plans.files.secondaries: give secondary or secondaries, not both`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setSecrets(t)
			got := strings.Join(problems(t, edit(t, at, at+c.add)), "\n")
			if !strings.Contains(got, c.want) {
				t.Errorf("errors:\n%s\nwant a line starting %s", got, c.want)
			}
		})
	}
	t.Run("warm postgres", func(t *testing.T) {
		setSecrets(t)
		t.Setenv("PG_PASSWORD", "s3cret")
		doc := edit(t, at, at+"    standby: warm\n")
		doc = strings.Replace(doc, withSourceHooks, `primary: {driver: postgres, path: /pg, host: h, password: env:PG_PASSWORD}`, 1)
		got := strings.Join(problems(t, doc), "\n")
		if !strings.Contains(got, `plans.files.standby: warm is not supported for a physical postgres source (source.primary)`) {
			t.Errorf("errors:\n%s", got)
		}
	})
	t.Run("secondary twice", func(t *testing.T) {
		setSecrets(t)
		got := strings.Join(problems(t, edit(t, "    secondary: secondary\n", "    secondaries: [secondary, secondary]\n")), "\n")
		if !strings.Contains(got, `plans.files.secondaries[1]: "secondary" is named twice`) {
			t.Errorf("errors:\n%s", got)
		}
	})
}

func TestWindow(t *testing.T) {
	w, err := ParseWindow("22:00-04:00")
	if err != nil {
		t.Fatal(err)
	}
	at := func(h, m int) time.Time { return time.Date(2026, 1, 1, h, m, 0, 0, time.UTC) }
	for _, c := range []struct {
		t    time.Time
		want bool
	}{{at(23, 0), true}, {at(3, 59), true}, {at(4, 0), false}, {at(12, 0), false}, {at(22, 0), true}} {
		if got := w.Contains(c.t); got != c.want {
			t.Errorf("Contains(%s) = %v", c.t.Format("15:04"), got)
		}
	}
	if _, err := ParseWindow("01:00-01:00"); err == nil {
		t.Error("an empty window was accepted")
	}
}
