package config

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // schedule time zones resolve on machines without a zoneinfo database
)

// Schedule runs a plan's protection cycle by itself, as a Temporal Schedule
// (drorch schedule apply). Exactly one of Every and Cron is set.
type Schedule struct {
	// Every starts a cycle at this interval, e.g. 15m or 24h.
	Every time.Duration `yaml:"every"`
	// Cron starts a cycle at the times of a cron expression, e.g. "0 2 * * *".
	Cron string `yaml:"cron"`
	// Window, "HH:MM-HH:MM" in TimeZone, is when cycles may start; a cycle
	// still running when the window ends is not stopped. A window that ends
	// before it begins crosses midnight ("22:00-04:00"). "": any time.
	Window string `yaml:"window"`
	// TimeZone is the IANA name Cron and Window are read in; "" is UTC.
	TimeZone string `yaml:"timeZone"`
	// Jitter delays each start by a random amount up to this much.
	Jitter time.Duration `yaml:"jitter"`
	// Paused creates the schedule paused.
	Paused bool `yaml:"paused"`
}

// Retention is which restore points a site keeps; the rules add up, as in
// restic's forget: a point is kept if any rule keeps it. Never forgotten
// whatever the rules say: the newest valid point, a point in use by a
// running operation, and a pinned point.
type Retention struct {
	KeepLast    int           `yaml:"keepLast"`    // the newest N points
	KeepHourly  int           `yaml:"keepHourly"`  // the newest point of each of the last N hours that have one
	KeepDaily   int           `yaml:"keepDaily"`   // ... days
	KeepWeekly  int           `yaml:"keepWeekly"`  // ... ISO weeks
	KeepMonthly int           `yaml:"keepMonthly"` // ... months
	KeepWithin  time.Duration `yaml:"keepWithin"`  // every point younger than this
}

// DefaultRetention is a plan's Retention when the file sets none: 14 daily
// restore points before today's. keepDaily counts the current day, as in
// restic (repo.ApplyRetention), so with one backup a day, after day N's
// backup it keeps the points of days N and N-1 ... N-14 and forgets older
// ones: 15.
var DefaultRetention = Retention{KeepDaily: 15}

// RetentionPolicy is the plan's retention, the default if the file has none.
func (p *Plan) RetentionPolicy() Retention {
	if p.Retention == nil {
		return DefaultRetention
	}
	return *p.Retention
}

// Objectives are the plan's recovery objectives, which status and the
// alerts measure against. Zero: not set.
type Objectives struct {
	// RPO is the most data, in time, the plan may lose: the newest valid
	// point at every standby site must be younger.
	RPO time.Duration `yaml:"rpo"`
	// RTO is how long a failover may take.
	RTO time.Duration `yaml:"rto"`
}

// Standby modes.
const (
	StandbyCold = "cold"
	StandbyWarm = "warm"
)

// MinScheduleEvery is the shortest schedule interval.
const MinScheduleEvery = time.Minute

func (p *Plan) setDefaults() { p.Standby = StandbyCold }

// Window is a schedule's start window: minutes after midnight, Start
// included, End excluded; End < Start crosses midnight.
type Window struct{ Start, End int }

// ParseWindow reads "HH:MM-HH:MM".
func ParseWindow(s string) (Window, error) {
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		return Window{}, fmt.Errorf("must be HH:MM-HH:MM, such as 01:00-05:00, got %q", s)
	}
	var w Window
	for i, part := range []string{from, to} {
		t, err := time.Parse("15:04", strings.TrimSpace(part))
		if err != nil {
			return Window{}, fmt.Errorf("must be HH:MM-HH:MM, such as 01:00-05:00, got %q", s)
		}
		m := t.Hour()*60 + t.Minute()
		if i == 0 {
			w.Start = m
		} else {
			w.End = m
		}
	}
	if w.Start == w.End {
		return Window{}, fmt.Errorf("starts and ends at the same time (%q); leave window out for any time", s)
	}
	return w, nil
}

// Contains reports whether the time of day of t (in its own location) is
// inside the window.
func (w Window) Contains(t time.Time) bool {
	m := t.Hour()*60 + t.Minute()
	if w.Start < w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End
}

// Location is the schedule's time zone.
func (s *Schedule) Location() (*time.Location, error) {
	if s.TimeZone == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(s.TimeZone)
}

func (s *Schedule) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	switch {
	case s.Every == 0 && s.Cron == "":
		d.errorf(path, "give every (such as 15m) or cron (such as \"0 2 * * *\")")
	case s.Every != 0 && s.Cron != "":
		d.errorf(f("cron"), "give every or cron, not both")
	case s.Every != 0 && s.Every < MinScheduleEvery:
		d.errorf(f("every"), "must be at least %s, got %s", MinScheduleEvery, s.Every)
	case s.Cron != "":
		if n := len(strings.Fields(s.Cron)); n != 5 && !strings.HasPrefix(s.Cron, "@") {
			d.errorf(f("cron"), "must have 5 fields (minute hour day-of-month month day-of-week) or be @daily, @hourly…, got %q", s.Cron)
		}
	}
	if s.Window != "" {
		if _, err := ParseWindow(s.Window); err != nil {
			d.errorf(f("window"), "%v", err)
		}
	}
	if s.TimeZone != "" {
		if _, err := time.LoadLocation(s.TimeZone); err != nil {
			d.errorf(f("timeZone"), "unknown time zone %q; use an IANA name such as Europe/Berlin", s.TimeZone)
		}
	}
	if s.Every != 0 && s.Jitter >= s.Every {
		d.errorf(f("jitter"), "must be shorter than every (%s), got %s", s.Every, s.Jitter)
	}
}

func (r *Retention) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	for _, k := range []struct {
		key string
		n   int
	}{{"keepLast", r.KeepLast}, {"keepHourly", r.KeepHourly}, {"keepDaily", r.KeepDaily}, {"keepWeekly", r.KeepWeekly}, {"keepMonthly", r.KeepMonthly}} {
		if k.n < 0 {
			d.errorf(f(k.key), "must be 0 or more, got %d", k.n)
		}
	}
	if *r == (Retention{}) {
		d.errorf(path, "keeps nothing but the newest point: set at least one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepWithin, or leave retention out for %d daily points", DefaultRetention.KeepDaily)
	}
}

func (o *Objectives) validate(d *decoder, path string) {
	if o.RPO != 0 && o.RPO < time.Minute {
		d.errorf(join(path, "rpo"), "must be at least 1m, got %s", o.RPO)
	}
}

// validateProtection checks the plan's protection-cycle settings.
func (p *Plan) validateProtection(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	if p.Schedule != nil {
		p.Schedule.validate(d, f("schedule"))
	}
	if p.Retention != nil {
		p.Retention.validate(d, f("retention"))
	}
	if p.Standby != StandbyCold && p.Standby != StandbyWarm {
		d.errorf(f("standby"), "must be %s or %s, got %q", StandbyCold, StandbyWarm, p.Standby)
	}
	if p.Standby == StandbyWarm {
		for _, site := range sortedKeys(p.Source) {
			if s := p.Source[site]; s != nil && s.Driver == "postgres" && (s.Mode == "" || s.Mode == DefaultPostgresMode) {
				// A refresh would start and promote the standby at its base
				// backup, and a failover that finds the point there would
				// skip the recovery from the WAL shipped since: rows lost.
				d.errorf(f("standby"), "warm is not supported for a physical postgres source (source.%s): use cold, where a failover restores and recovers to the newest shipped WAL", site)
				break
			}
		}
	}
	p.Objectives.validate(d, f("objectives"))
}
