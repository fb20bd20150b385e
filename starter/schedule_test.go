package main

import (
	"testing"
	"time"

	"github.com/drorch/drorch/internal/config"
)

// The catch-up window is about one interval: a daily cron survives a
// two-hour outage around its fire time, and a short or long one is clamped.
func TestScheduleCatchupWindow(t *testing.T) {
	c := &cli{taskQueue: "drorch"}
	for _, tc := range []struct {
		s    config.Schedule
		want time.Duration
	}{
		{config.Schedule{Cron: "0 2 * * *"}, 24 * time.Hour},
		{config.Schedule{Cron: "*/15 * * * *"}, 15 * time.Minute},
		{config.Schedule{Cron: "0 3 1 * *"}, maxCatchup},            // monthly: clamped to 7 days
		{config.Schedule{Cron: "0 0 2 * * *"}, config.CronFallback}, // Temporal's seconds field
		{config.Schedule{Every: time.Second}, minCatchup},
		{config.Schedule{Every: time.Hour}, time.Hour},
		{config.Schedule{Every: 30 * 24 * time.Hour}, maxCatchup},
	} {
		d, err := c.desiredSchedule("files", &tc.s)
		if err != nil {
			t.Fatal(err)
		}
		if d.policy.CatchupWindow != tc.want {
			t.Errorf("%+v: catch-up window %s, want %s", tc.s, d.policy.CatchupWindow, tc.want)
		}
	}
}
