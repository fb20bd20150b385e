package repo

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/drorch/drorch/internal/config"
)

// daily returns one point a day at 02:00 UTC for days 1..n of Nov 2026.
func daily(n int) []RetentionPoint {
	var out []RetentionPoint
	for d := 1; d <= n; d++ {
		t := time.Date(2026, 11, d, 2, 0, 0, 0, time.UTC)
		out = append(out, RetentionPoint{ID: NewPointID(t, fmt.Sprintf("d%02d", d)), Time: t})
	}
	return out
}

func keptDays(ds []Decision) []int {
	var out []int
	for _, d := range ds {
		if d.Keep {
			out = append(out, d.Time.Day())
		}
	}
	slices.Sort(out)
	return out
}

func days(from, to int) []int {
	var out []int
	for d := from; d <= to; d++ {
		out = append(out, d)
	}
	return out
}

func TestApplyRetention(t *testing.T) {
	now := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	hourly := func() []RetentionPoint {
		var out []RetentionPoint
		for h := 0; h < 10; h++ {
			for m := 0; m < 60; m += 20 {
				tt := time.Date(2026, 11, 20, h, m, 0, 0, time.UTC)
				out = append(out, RetentionPoint{ID: NewPointID(tt, "h"), Time: tt})
			}
		}
		return out
	}
	for _, c := range []struct {
		name   string
		points []RetentionPoint
		pol    config.Retention
		pinned map[string]bool
		inUse  map[string]bool
		loc    *time.Location
		want   []int // days kept (hourly cases: count only)
		count  int
	}{
		{name: "default: today and the 14 days before", points: daily(20), pol: config.DefaultRetention, want: days(6, 20)},
		{name: "fewer points than the rule", points: daily(5), pol: config.DefaultRetention, want: days(1, 5)},
		{name: "keepLast 3", points: daily(20), pol: config.Retention{KeepLast: 3}, want: days(18, 20)},
		{name: "newest always", points: daily(20), pol: config.Retention{KeepWithin: time.Hour}, want: []int{20}},
		{name: "within 72h", points: daily(20), pol: config.Retention{KeepWithin: 72 * time.Hour}, want: days(18, 20)}, // 17th 02:00 is 73h old
		{name: "weekly 2 (ISO weeks, Monday first)", points: daily(20), pol: config.Retention{KeepWeekly: 2}, want: []int{15, 20}},
		{name: "monthly 1", points: daily(20), pol: config.Retention{KeepMonthly: 1}, want: []int{20}},
		{name: "pinned and in use", points: daily(20), pol: config.Retention{KeepLast: 1},
			pinned: map[string]bool{daily(20)[2].ID: true}, inUse: map[string]bool{daily(20)[4].ID: true}, want: []int{3, 5, 20}},
		{name: "rules add up", points: daily(20), pol: config.Retention{KeepLast: 2, KeepWeekly: 3}, want: []int{8, 15, 19, 20}},
		{name: "time zone moves the day boundary", points: []RetentionPoint{
			{ID: NewPointID(time.Date(2026, 11, 1, 23, 0, 0, 0, time.UTC), "a"), Time: time.Date(2026, 11, 1, 23, 0, 0, 0, time.UTC)},
			{ID: NewPointID(time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC), "b"), Time: time.Date(2026, 11, 2, 1, 0, 0, 0, time.UTC)},
		}, pol: config.Retention{KeepDaily: 2}, loc: time.FixedZone("UTC+3", 3*3600), want: []int{2}},
		{name: "gaps do not count", points: append(daily(3), daily(20)[15:]...), pol: config.Retention{KeepDaily: 7}, want: []int{2, 3, 16, 17, 18, 19, 20}},
		{name: "hourly 4", points: hourly(), pol: config.Retention{KeepHourly: 4}, count: 4},
		{name: "empty", points: nil, pol: config.DefaultRetention},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds := ApplyRetention(c.points, c.pol, now, c.loc, c.pinned, c.inUse)
			if len(ds) != len(c.points) {
				t.Fatalf("%d decisions for %d points", len(ds), len(c.points))
			}
			if c.count > 0 {
				n := 0
				for _, d := range ds {
					if d.Keep {
						n++
						if len(d.Reasons) == 0 {
							t.Errorf("%s kept without a reason", d.Point)
						}
					}
				}
				if n != c.count {
					t.Fatalf("kept %d, want %d", n, c.count)
				}
				return
			}
			if got := keptDays(ds); !slices.Equal(got, c.want) {
				t.Fatalf("kept days %v, want %v\n%+v", got, c.want, ds)
			}
			for _, d := range ds {
				if d.Keep == (len(d.Reasons) == 0) {
					t.Errorf("%s: keep %v with reasons %v", d.Point, d.Keep, d.Reasons)
				}
			}
		})
	}
}
