package repo

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drorch/drorch/internal/config"
)

// Reasons a retention decision gives for keeping a point (Decision.Reasons).
const (
	KeepNewest  = "newest"  // the newest valid point is never forgotten
	KeepPinned  = "pinned"  // drorch points pin
	KeepInUse   = "in use"  // a running restore, drill or failover may read it
	KeepLast    = "last"    // keepLast
	KeepHourly  = "hourly"  // keepHourly
	KeepDaily   = "daily"   // keepDaily
	KeepWeekly  = "weekly"  // keepWeekly
	KeepMonthly = "monthly" // keepMonthly
	KeepWithin  = "within"  // keepWithin
)

// RetentionPoint is a valid restore point as retention sees it.
type RetentionPoint struct {
	ID   string
	Time time.Time
}

// Decision is what the policy decided for one point. Reasons lists the
// rules that keep it, e.g. ["daily 3/15", "pinned"]; a point no rule
// keeps is forgotten.
type Decision struct {
	Point   string    `json:"point"`
	Time    time.Time `json:"time"`
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons,omitempty"`
}

// ApplyRetention decides, for the valid points of one site, which to keep
// and which to forget under policy p, in the spirit of restic's forget:
//
//   - The rules add up: a point is kept when any rule keeps it.
//   - keepLast N keeps the N newest points.
//   - keepHourly/Daily/Weekly/Monthly N keep the newest point of each of
//     the N newest hours/days/ISO weeks/months (read in loc) that have a
//     point, counting the current one: with one backup a day, keepDaily 15
//     keeps today's point and those of the 14 days before. Periods without
//     a point do not count, so points stop being forgotten when backups
//     stop.
//   - keepWithin D keeps every point younger than D at now.
//   - Whatever the rules say, the newest point, a pinned point and a point
//     in use are kept.
//
// The result is in the order of points, which need not be sorted.
func ApplyRetention(points []RetentionPoint, p config.Retention, now time.Time, loc *time.Location, pinned, inUse map[string]bool) []Decision {
	if loc == nil {
		loc = time.UTC
	}
	order := make([]int, len(points)) // indexes, newest first
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := points[b].Time.Compare(points[a].Time); c != 0 {
			return c
		}
		return strings.Compare(points[b].ID, points[a].ID)
	})
	out := make([]Decision, len(points))
	for i, pt := range points {
		out[i] = Decision{Point: pt.ID, Time: pt.Time.UTC()}
	}
	keep := func(i int, why string) {
		out[i].Keep = true
		out[i].Reasons = append(out[i].Reasons, why)
	}
	if len(order) > 0 {
		keep(order[0], KeepNewest)
	}
	for n, i := range order {
		if n < p.KeepLast {
			keep(i, fmt.Sprintf("%s %d/%d", KeepLast, n+1, p.KeepLast))
		}
	}
	buckets := []struct {
		name string
		n    int
		key  func(t time.Time) string
	}{
		{KeepHourly, p.KeepHourly, func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{KeepDaily, p.KeepDaily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{KeepWeekly, p.KeepWeekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{KeepMonthly, p.KeepMonthly, func(t time.Time) string { return t.Format("2006-01") }},
	}
	for _, b := range buckets {
		if b.n <= 0 {
			continue
		}
		seen := 0
		last := ""
		for _, i := range order {
			k := b.key(points[i].Time.In(loc))
			if k == last {
				continue // an older point of a period already kept
			}
			last = k
			if seen++; seen > b.n {
				break
			}
			keep(i, fmt.Sprintf("%s %d/%d (%s)", b.name, seen, b.n, k))
		}
	}
	if p.KeepWithin > 0 {
		for _, i := range order {
			if now.Sub(points[i].Time) < p.KeepWithin {
				keep(i, fmt.Sprintf("%s %s", KeepWithin, p.KeepWithin))
			}
		}
	}
	for i, pt := range points {
		if pinned[pt.ID] {
			keep(i, KeepPinned)
		}
		if inUse[pt.ID] {
			keep(i, KeepInUse)
		}
	}
	return out
}
