package metrics

import (
	"testing"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
)

// TestWALLag: the lag is the age of the oldest file the standby lacks, 0
// when caught up, and grows from the last measurement once shipping has
// not measured the site for walStale.
func TestWALLag(t *testing.T) {
	now := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	m := New()
	m.now = func() time.Time { return now }
	m.WALChecked("db", "secondary", now.Add(-time.Second), now.Add(-40*time.Second))
	m.WALChecked("db", "remote", now.Add(-time.Second), time.Time{})
	m.WALChecked("db", "stale", now.Add(-5*time.Minute), time.Time{})
	ch := make(chan prom.Metric, 10)
	walCollector{m}.Collect(ch)
	if len(ch) != 3 {
		t.Fatalf("%d series of drorch_wal_lag_seconds, want 3", len(ch))
	}
	for site, lag := range map[string]time.Duration{"secondary": 40 * time.Second, "remote": 0, "stale": 5 * time.Minute} {
		if got := walLag(now, m.wal.lag[siteKey{"db", site}]); got != lag {
			t.Errorf("lag at %s = %s, want %s", site, got, lag)
		}
	}
}
