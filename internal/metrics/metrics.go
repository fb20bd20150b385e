// Package metrics is drorch's Prometheus registry: Temporal's SDK metrics
// (through tally) and drorch's own, served together on the worker's
// --metrics-listen address. Activities report through the package's hooks
// (PointCommitted, BackupBytes, …), which do nothing until a registry is
// installed with Install, so code that runs without metrics (tests, the
// CLI) needs no care.
package metrics

import (
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/uber-go/tally/v4"
	tallyprom "github.com/uber-go/tally/v4/prometheus"
	"go.temporal.io/sdk/client"
	sdktally "go.temporal.io/sdk/contrib/tally"
)

// Metrics holds drorch's metrics and the registry they are served from.
type Metrics struct {
	reg   *prom.Registry
	now   func() time.Time
	mu    sync.Mutex
	point map[siteKey]time.Time // snapshot time of the newest valid point
	gc    map[siteKey]time.Time
	drill map[string]time.Time
	rpo   map[string]time.Duration
	sched map[string]scheduleState
	wal   walMetrics // wal.go

	backupBytes   *prom.CounterVec
	transmitBytes *prom.CounterVec
	opDuration    *prom.HistogramVec
}

type siteKey struct{ plan, site string }

type scheduleState struct {
	exists, paused bool
	since          time.Time // when it was first seen paused
}

var (
	descAge = prom.NewDesc("drorch_recovery_point_age_seconds",
		"Age of the newest valid restore point of the plan at the site (now − its snapshot time): the RPO a failover to that site would have now.",
		[]string{"plan", "site"}, nil)
	descRPO = prom.NewDesc("drorch_rpo_objective_seconds",
		"The plan's RPO objective (config objectives.rpo); absent when none is set.", []string{"plan"}, nil)
	descGC = prom.NewDesc("drorch_gc_last_success_timestamp_seconds",
		"Unix time of the last garbage collection of the plan's repository at the site that succeeded.", []string{"plan", "site"}, nil)
	descDrill = prom.NewDesc("drorch_last_drill_success_timestamp_seconds",
		"Unix time at which the plan's last passed drill finished.", []string{"plan"}, nil)
	descPaused = prom.NewDesc("drorch_schedule_paused",
		"1 when the plan's protect schedule is paused, 0 when it runs; absent when the plan has no schedule.", []string{"plan"}, nil)
	descPausedSince = prom.NewDesc("drorch_schedule_paused_since_timestamp_seconds",
		"Unix time since which this worker has seen the plan's schedule paused; absent when it is not paused.", []string{"plan"}, nil)
)

// New returns a registry with drorch's metrics and Go's runtime and
// process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prom.NewRegistry(), now: time.Now,
		point: map[siteKey]time.Time{}, gc: map[siteKey]time.Time{}, drill: map[string]time.Time{},
		rpo: map[string]time.Duration{}, sched: map[string]scheduleState{},
		backupBytes: prom.NewCounterVec(prom.CounterOpts{
			Name: "drorch_backup_bytes_total", Help: "Bytes backups stored in the site's repository (new chunks, after compression and encryption).",
		}, []string{"plan", "site"}),
		transmitBytes: prom.NewCounterVec(prom.CounterOpts{
			Name: "drorch_transmit_bytes_total", Help: "Bytes transmissions copied into the site's repository (site: the destination).",
		}, []string{"plan", "site"}),
		opDuration: prom.NewHistogramVec(prom.HistogramOpts{
			Name: "drorch_operation_duration_seconds",
			Help: "Duration of the data-moving step of each operation that succeeded: backup (read, chunk, upload), transmit (copy chunks), restore (write the target).",
			// 1 s … ~9 h
			Buckets: prom.ExponentialBuckets(1, 2.5, 12),
		}, []string{"operation"}),
	}
	m.reg.MustRegister(m.backupBytes, m.transmitBytes, m.opDuration, collector{m}, walCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// SDKHandler is the Temporal SDK's metrics handler, reporting into the same
// registry (the samples-go "metrics" sample's tally scope).
func (m *Metrics) SDKHandler(onError func(error)) (client.MetricsHandler, error) {
	reporter, err := tallyprom.Configuration{TimerType: "histogram"}.NewReporter(tallyprom.ConfigurationOptions{
		Registry: m.reg, OnError: onError,
	})
	if err != nil {
		return nil, err
	}
	scope, _ := tally.NewRootScope(tally.ScopeOptions{
		CachedReporter:  reporter,
		Separator:       tallyprom.DefaultSeparator,
		SanitizeOptions: &sdktally.PrometheusSanitizeOptions,
	}, time.Second)
	return sdktally.NewMetricsHandler(sdktally.NewPrometheusNamingScope(scope)), nil
}

// collector reports the metrics computed at scrape time.
type collector struct{ m *Metrics }

func (c collector) Describe(ch chan<- *prom.Desc) {
	for _, d := range []*prom.Desc{descAge, descRPO, descGC, descDrill, descPaused, descPausedSince} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prom.Metric) {
	m := c.m
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for _, k := range sortedKeys(m.point) {
		ch <- prom.MustNewConstMetric(descAge, prom.GaugeValue, max(now.Sub(m.point[k]).Seconds(), 0), k.plan, k.site)
	}
	for _, k := range sortedKeys(m.gc) {
		ch <- prom.MustNewConstMetric(descGC, prom.GaugeValue, unix(m.gc[k]), k.plan, k.site)
	}
	for plan, d := range m.rpo {
		ch <- prom.MustNewConstMetric(descRPO, prom.GaugeValue, d.Seconds(), plan)
	}
	for plan, t := range m.drill {
		ch <- prom.MustNewConstMetric(descDrill, prom.GaugeValue, unix(t), plan)
	}
	for plan, s := range m.sched {
		if !s.exists {
			continue
		}
		v := 0.0
		if s.paused {
			v = 1
			ch <- prom.MustNewConstMetric(descPausedSince, prom.GaugeValue, unix(s.since), plan)
		}
		ch <- prom.MustNewConstMetric(descPaused, prom.GaugeValue, v, plan)
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func sortedKeys(m map[siteKey]time.Time) []siteKey {
	keys := make([]siteKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].plan < keys[j].plan || keys[i].plan == keys[j].plan && keys[i].site < keys[j].site
	})
	return keys
}

// PointCommitted records a restore point that became valid at site: the
// age there drops at once if it is the newest.
func (m *Metrics) PointCommitted(plan, site string, snapshot time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := (siteKey{plan, site}); snapshot.After(m.point[k]) {
		m.point[k] = snapshot
	}
}

// SetNewestPoint records what listing the site's repository found: the
// snapshot time of its newest valid point, zero for none (the age is then
// not reported: an absent series, which the alert rules catch).
func (m *Metrics) SetNewestPoint(plan, site string, snapshot time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if snapshot.IsZero() {
		delete(m.point, siteKey{plan, site})
		return
	}
	m.point[siteKey{plan, site}] = snapshot
}

// SetObjective records the plan's RPO objective; 0: none.
func (m *Metrics) SetObjective(plan string, rpo time.Duration) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if rpo <= 0 {
		delete(m.rpo, plan)
		return
	}
	m.rpo[plan] = rpo
}

// SetSchedule records the state of the plan's protect schedule. since is
// when the schedule last changed, as Temporal records it (for a paused
// one, when it was paused or changed since): it survives a restart of the
// worker. Zero: not known, and a newly paused schedule counts from now.
func (m *Metrics) SetSchedule(plan string, exists, paused bool, since time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sched[plan]
	switch {
	case paused && !since.IsZero():
		s.since = since
	case paused && !s.paused:
		s.since = m.now()
	}
	s.exists, s.paused = exists, paused
	m.sched[plan] = s
}

// DrillPassed records a passed drill of plan that finished at t.
func (m *Metrics) DrillPassed(plan string, t time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t.After(m.drill[plan]) {
		m.drill[plan] = t
	}
}

// GCSucceeded records a garbage collection of plan's repository at site
// that finished at t.
func (m *Metrics) GCSucceeded(plan, site string, t time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := (siteKey{plan, site}); t.After(m.gc[k]) {
		m.gc[k] = t
	}
}

// BackupBytes counts bytes a backup stored at site.
func (m *Metrics) BackupBytes(plan, site string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.backupBytes.WithLabelValues(plan, site).Add(float64(n))
}

// TransmitBytes counts bytes a transmission copied to site.
func (m *Metrics) TransmitBytes(plan, site string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.transmitBytes.WithLabelValues(plan, site).Add(float64(n))
}

// OperationDone observes the duration of an operation's data-moving step.
func (m *Metrics) OperationDone(operation string, d time.Duration) {
	if m == nil {
		return
	}
	m.opDuration.WithLabelValues(operation).Observe(d.Seconds())
}

// installed is the process's registry; nil until Install.
var installed atomic.Pointer[Metrics]

// Install makes m the registry the package's hooks report to.
func Install(m *Metrics) { installed.Store(m) }

// Installed is the registry the hooks report to, nil when metrics are off.
func Installed() *Metrics { return installed.Load() }

// The hooks activities call; each does nothing while metrics are off.

// PointCommitted: see Metrics.PointCommitted.
func PointCommitted(plan, site string, snapshot time.Time) {
	Installed().PointCommitted(plan, site, snapshot)
}

// GCSucceeded: see Metrics.GCSucceeded.
func GCSucceeded(plan, site string, t time.Time) { Installed().GCSucceeded(plan, site, t) }

// DrillPassed: see Metrics.DrillPassed.
func DrillPassed(plan string, t time.Time) { Installed().DrillPassed(plan, t) }

// BackupBytes: see Metrics.BackupBytes.
func BackupBytes(plan, site string, n int64) { Installed().BackupBytes(plan, site, n) }

// TransmitBytes: see Metrics.TransmitBytes.
func TransmitBytes(plan, site string, n int64) { Installed().TransmitBytes(plan, site, n) }

// OperationDone: see Metrics.OperationDone.
func OperationDone(operation string, d time.Duration) { Installed().OperationDone(operation, d) }
