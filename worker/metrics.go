package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/rs/zerolog"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/workflows"
)

// refreshEvery is how often the worker re-reads what its metrics report
// from the repositories and the schedules: listing points is cheap, and
// commits update the age at once anyway.
const refreshEvery = 20 * time.Second

// serveMetrics serves /metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, m *metrics.Metrics, zl zerolog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			zl.Error().Err(err).Msg("metrics server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return ln.Addr(), nil
}

// refresher keeps the metrics that are read, not counted, up to date for
// the plans that have a site this worker serves.
type refresher struct {
	m     *metrics.Metrics
	acts  *activities.Activities
	c     client.Client
	cfg   *config.Config
	sites []string
	log   zerolog.Logger
}

func (r *refresher) run(ctx context.Context) {
	for {
		r.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(refreshEvery):
		}
	}
}

func (r *refresher) refresh(ctx context.Context) {
	plans := make([]string, 0, len(r.cfg.Plans))
	for name := range r.cfg.Plans {
		plans = append(plans, name)
	}
	sort.Strings(plans)
	for _, name := range plans {
		p := r.cfg.Plans[name]
		served := false
		for _, site := range p.Sites() {
			if !slices.Contains(r.sites, site) {
				continue
			}
			served = true
			r.site(ctx, name, site)
		}
		if !served {
			continue
		}
		r.m.SetObjective(name, p.Objectives.RPO)
		r.schedule(ctx, name)
	}
}

func (r *refresher) site(ctx context.Context, plan, site string) {
	ctx, cancel := context.WithTimeout(ctx, refreshEvery)
	defer cancel()
	pts, err := r.acts.ListPoints(ctx, activities.ListPointsInput{Plan: plan, Site: site})
	if err != nil {
		// Keep the last known newest point: its age keeps growing, which
		// is the truth as far as anyone can tell.
		r.log.Debug().Err(err).Str("plan", plan).Str("site", site).Msg("metrics: list points")
	} else {
		var newest time.Time
		for _, p := range pts.Points {
			if p.Snapshot.After(newest) {
				newest = p.Snapshot
			}
		}
		r.m.SetNewestPoint(plan, site, newest)
	}
	if t, err := r.acts.LastDrillPassed(ctx, plan, site); err == nil && !t.IsZero() {
		r.m.DrillPassed(plan, t)
	}
}

func (r *refresher) schedule(ctx context.Context, plan string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	desc, err := r.c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(plan)).Describe(ctx)
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		r.m.SetSchedule(plan, false, false, time.Time{})
	case err != nil:
		r.log.Debug().Err(err).Str("plan", plan).Msg("metrics: describe schedule")
	default:
		r.m.SetSchedule(plan, true, desc.Schedule.State != nil && desc.Schedule.State.Paused, desc.Info.LastUpdateAt)
	}
}
