package config

import (
	"testing"
	"time"
)

func TestScheduleInterval(t *testing.T) {
	for _, c := range []struct {
		s    Schedule
		want time.Duration
		ok   bool
	}{
		{Schedule{Every: 15 * time.Minute}, 15 * time.Minute, true},
		{Schedule{Cron: "0 2 * * *"}, 24 * time.Hour, true},
		{Schedule{Cron: "*/5 * * * *"}, 5 * time.Minute, true},
		{Schedule{Cron: "0 2 * * 1-5"}, 24 * time.Hour, true}, // the weekend gap is longer
		{Schedule{Cron: "30 3 * * 0"}, 7 * 24 * time.Hour, true},
		{Schedule{Cron: "0 */6 * * *"}, 6 * time.Hour, true},
		{Schedule{Cron: "@hourly"}, time.Hour, true},
		{Schedule{Cron: "0 0 2 * * *"}, CronFallback, false}, // seconds: Temporal's, not standard
	} {
		got, ok := c.s.Interval()
		if got != c.want || ok != c.ok {
			t.Errorf("Interval(%+v) = %s, %v; want %s, %v", c.s, got, ok, c.want, c.ok)
		}
	}
}
