package config

import (
	"time"

	"github.com/robfig/cron/v3"
)

// CronFallback is the interval assumed for a cron expression that
// robfig/cron cannot parse: Temporal's cron syntax is a superset of the
// standard one (seconds, years, "L", "#", ...), so such an expression is
// valid for the schedule but its gaps are not computed here.
const CronFallback = 24 * time.Hour

// cronRef is where the fire times of a cron expression are computed from:
// fixed, so the interval (and a schedule's digest) does not depend on when
// it is computed.
var cronRef = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC) // a Monday

// Interval is the time between two cycles of the schedule: Every, or for a
// cron expression the smallest gap between consecutive fire times among
// the first 64 after a fixed Monday (so "0 2 * * 1-5" is 24h, not 72h);
// ok is false when the expression cannot be parsed and CronFallback is
// returned. Zero for neither.
func (s *Schedule) Interval() (d time.Duration, ok bool) {
	if s == nil {
		return 0, true
	}
	if s.Cron == "" {
		return s.Every, true
	}
	sched, err := cron.ParseStandard(s.Cron)
	if err != nil {
		return CronFallback, false
	}
	prev := sched.Next(cronRef)
	if prev.IsZero() {
		return CronFallback, false
	}
	for range 64 {
		next := sched.Next(prev)
		if next.IsZero() {
			break
		}
		if gap := next.Sub(prev); d == 0 || gap < d {
			d = gap
		}
		prev = next
	}
	if d == 0 {
		return CronFallback, false
	}
	return d, true
}
