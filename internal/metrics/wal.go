package metrics

import (
	"sync"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
)

var descWALLag = prom.NewDesc("drorch_wal_lag_seconds",
	"How far the plan's WAL at the standby site is behind the active site's: the age of the oldest WAL file the active site archived that the site lacks, "+
		"0 when it lacks none. Measured by each WAL shipping round (ShipWAL); a site not measured for walStale counts as behind since it last was.",
	[]string{"plan", "site"}, nil)

// walStale is how long a measurement of "caught up" holds: shipping
// rounds come every few seconds, so one this old means shipping stopped.
const walStale = 2 * time.Minute

type walState struct{ checked, behind time.Time }

// walMetrics are the WAL shipping measurements, by plan and standby site.
type walMetrics struct {
	mu  sync.Mutex
	lag map[siteKey]walState
}

type walCollector struct{ m *Metrics }

func (c walCollector) Describe(ch chan<- *prom.Desc) { ch <- descWALLag }

func (c walCollector) Collect(ch chan<- prom.Metric) {
	w := &c.m.wal
	w.mu.Lock()
	defer w.mu.Unlock()
	now := c.m.now()
	for k, s := range w.lag {
		ch <- prom.MustNewConstMetric(descWALLag, prom.GaugeValue, walLag(now, s).Seconds(), k.plan, k.site)
	}
}

func walLag(now time.Time, s walState) time.Duration {
	switch {
	case !s.behind.IsZero():
		return max(now.Sub(s.behind), 0)
	case now.Sub(s.checked) > walStale:
		return now.Sub(s.checked)
	}
	return 0
}

// WALChecked records a WAL shipping round to site: when it ended, and when
// the active site archived the oldest file site still lacks (zero: none).
func (m *Metrics) WALChecked(plan, site string, checked, behind time.Time) {
	if m == nil {
		return
	}
	m.wal.mu.Lock()
	defer m.wal.mu.Unlock()
	if m.wal.lag == nil {
		m.wal.lag = map[siteKey]walState{}
	}
	m.wal.lag[siteKey{plan, site}] = walState{checked: checked, behind: behind}
}

// WALChecked records a WAL shipping round in the installed metrics.
func WALChecked(plan, site string, checked, behind time.Time) {
	Installed().WALChecked(plan, site, checked, behind)
}
