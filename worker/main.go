// Command drorch-worker runs drorch's workflows and, for each site it is
// given, the activities that touch that site's resources.
//
//	drorch-worker --config drorch.yaml --site primary [--site secondary] [--data-slots 2] [--metrics-listen 127.0.0.1:9464]
//	drorch-worker wal-push --plan P --site S [--config FILE] PATH       (archive_command)
//	drorch-worker wal-fetch --plan P --site S [--config FILE] NAME DEST (restore_command)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/deployments/dev"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/connect"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/zlog"
	"github.com/drorch/drorch/workflows"
)

// defaultMemoryLimit is the worker's soft memory limit unless GOMEMLIMIT
// says otherwise.
const defaultMemoryLimit = 384 << 20

type siteList []string

func (s *siteList) String() string     { return strings.Join(*s, ",") }
func (s *siteList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if code, ok := walCommand(os.Args[1:], os.Stderr); ok {
		os.Exit(code)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "drorch-worker:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("drorch-worker", flag.ContinueOnError)
	var (
		sites        siteList
		cf           connect.Flags
		cfgPath      = fs.String("config", "", "deployment config file (default $DRORCH_CONFIG, then ./drorch.yaml, then the embedded dev config)")
		level        = fs.String("log-level", "info", "log level: debug, info, warn, error")
		runWorkflows = fs.Bool("workflows", true, "also run workflows (on the --task-queue)")
		queue        = fs.String("task-queue", workflows.TaskQueue, "task queue of the workflows; site activities use <task-queue>-<site> and <task-queue>-<site>.data")
		metricsAddr  = fs.String("metrics-listen", "", "serve Prometheus metrics on this host:port at /metrics, e.g. 127.0.0.1:9464 (default: off)")
		stall        = fs.Duration("stall-timeout", activities.DefaultStallTimeout, "a data-moving activity that moves nothing this long stops heartbeating, times out and is retried")
		dataSlots    = fs.Int("data-slots", 2, "how many data-moving activities (a range of a backup's upload or a transmit's copy, on <task-queue>-<site>.data) this worker runs at once; more workers at a site add throughput")
	)
	fs.Var(&sites, "site", "site whose activities this worker runs (repeatable)")
	fs.StringVar(&cf.Address, "address", "", "Temporal frontend host:port (env TEMPORAL_ADDRESS)")
	fs.StringVar(&cf.Namespace, "namespace", "", "Temporal namespace (env TEMPORAL_NAMESPACE)")
	fs.StringVar(&cf.TLSCert, "tls-cert", "", "TLS client certificate (env TEMPORAL_TLS_CERT)")
	fs.StringVar(&cf.TLSKey, "tls-key", "", "TLS client key (env TEMPORAL_TLS_KEY)")
	fs.StringVar(&cf.TLSCA, "tls-ca", "", "CA certificate of the Temporal server (env TEMPORAL_TLS_CA)")
	fs.StringVar(&cf.ServerName, "tls-server-name", "", "server name to verify (env TEMPORAL_TLS_SERVER_NAME)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	zl, err := zlog.New(os.Stderr, *level)
	if err != nil {
		return err
	}
	profileOnSignal(zl)
	if os.Getenv("GOMEMLIMIT") == "" {
		// Data moves through bounded pipelines; a soft limit makes the
		// garbage collector keep the heap near what is live, whatever the
		// size of the data set. GOMEMLIMIT overrides it.
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	cfg, err := config.Load(*cfgPath)
	if errors.Is(err, config.ErrNoConfig) {
		zl.Warn().Msg("no config file given or found: using the embedded dev-stack config")
		cfg, err = config.Parse(dev.Name, dev.Config)
	}
	if err != nil {
		return err
	}
	if *dataSlots < 1 {
		return fmt.Errorf("--data-slots must be at least 1, got %d", *dataSlots)
	}
	if len(sites) == 0 {
		return fmt.Errorf("give the sites this worker serves with --site (the config has %s)", strings.Join(siteNames(cfg), ", "))
	}
	for _, s := range sites {
		if _, err := cfg.Site(s); err != nil {
			return fmt.Errorf("--site %s: %w", s, err)
		}
	}
	settings, err := connect.Settings(cf, cfg.Temporal)
	if err != nil {
		return err
	}
	var m *metrics.Metrics
	var with []func(*client.Options)
	if *metricsAddr != "" {
		m = metrics.New()
		h, err := m.SDKHandler(func(err error) { zl.Warn().Err(err).Msg("temporal metrics") })
		if err != nil {
			return fmt.Errorf("--metrics-listen: %w", err)
		}
		with = append(with, func(o *client.Options) { o.MetricsHandler = h })
	}
	c, err := connect.Dial(settings, zl, with...)
	if err != nil {
		return err
	}
	defer c.Close()

	acts := activities.New(cfg, c, zl)
	acts.StallTimeout = *stall
	if m != nil {
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		addr, err := serveMetrics(ctx, *metricsAddr, m, zl)
		if err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", *metricsAddr, err)
		}
		metrics.Install(m)
		go (&refresher{m: m, acts: acts, c: c, cfg: cfg, sites: sites, log: zl}).run(ctx)
		zl.Info().Str("address", addr.String()).Msg("serving Prometheus metrics at /metrics")
	}
	opts := activities.WorkerOptionsFor(cfg)
	var workers []worker.Worker
	if *runWorkflows {
		w := worker.New(c, *queue, opts)
		for _, wf := range workflows.All {
			w.RegisterWorkflow(wf)
		}
		w.RegisterActivity(acts)
		workers = append(workers, w)
	}
	// A worker at its data-slot limit stops polling the data queue, so
	// Temporal hands the next range to another worker at the site, while
	// the site queue (locks, claims, fences, DNS) stays served.
	dataOpts := opts
	dataOpts.MaxConcurrentActivityExecutionSize = *dataSlots
	for _, s := range sites {
		w := worker.New(c, workflows.SiteTaskQueue(*queue, s), opts)
		w.RegisterActivity(acts)
		dw := worker.New(c, workflows.SiteDataTaskQueue(*queue, s), dataOpts)
		dw.RegisterActivity(acts)
		workers = append(workers, w, dw)
	}
	for _, w := range workers {
		if err := w.Start(); err != nil {
			return err
		}
	}
	zl.Info().Str("config", cfg.File).Strs("sites", sites).Str("temporal", settings.Address).
		Str("namespace", settings.Namespace).Msg("drorch worker started")
	<-worker.InterruptCh()
	zl.Info().Msg("stopping")
	for _, w := range workers {
		w.Stop()
	}
	return nil
}

func siteNames(cfg *config.Config) []string {
	var names []string
	for n := range cfg.Sites {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
