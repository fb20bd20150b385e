package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/drivers/all"
	"github.com/drorch/drorch/drivers/dns"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// SetAccessInput names the site whose resources are switched.
type SetAccessInput struct {
	Plan string      `json:"plan"`
	Site string      `json:"site"`
	Mode access.Mode `json:"mode"`
}

// ResourceState is one resource's mode, or why it could not be read.
type ResourceState struct {
	Resource string      `json:"resource"`
	Mode     access.Mode `json:"mode,omitempty"`
	Error    string      `json:"error,omitempty"`
}

// SetAccess switches every access resource of the plan at the site to the
// mode, in the configured order, and reads each back. A resource that cannot
// be reached fails the activity with an error of type Unreachable, so a
// workflow can tell a dark site from a refusal.
func (a *Activities) SetAccess(ctx context.Context, in SetAccessInput) ([]ResourceState, error) {
	res, err := a.setAccess(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) setAccess(ctx context.Context, in SetAccessInput) ([]ResourceState, error) {
	if _, err := access.ParseMode(string(in.Mode)); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	rs, err := a.accessAt(in.Plan, in.Site)
	if err != nil {
		return nil, err
	}
	out := []ResourceState{}
	for _, r := range rs {
		if err := r.SetMode(ctx, in.Mode); err != nil {
			return out, unreachableType(fmt.Errorf("set %s %s at site %s: %w", r.Describe(), in.Mode, in.Site, err))
		}
		mode, err := r.Status(ctx)
		if err != nil {
			return out, unreachableType(fmt.Errorf("status of %s at site %s: %w", r.Describe(), in.Site, err))
		}
		if mode != in.Mode {
			return out, fmt.Errorf("%s at site %s is %s after being set %s", r.Describe(), in.Site, mode, in.Mode)
		}
		out = append(out, ResourceState{Resource: r.Describe(), Mode: mode})
		a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Str("resource", r.Describe()).Str("mode", string(mode)).Msg("access switched")
	}
	return out, nil
}

// AccessStatusInput names the site whose resources are read.
type AccessStatusInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
}

// AccessStatus reads the mode of every access resource of the plan at the
// site. A resource that does not answer, or refuses, fails the activity
// (type Unreachable when it cannot be reached); one that is fenced part-way
// (access.ErrPartial) is reported with no mode and the reason in Error.
func (a *Activities) AccessStatus(ctx context.Context, in AccessStatusInput) ([]ResourceState, error) {
	rs, err := a.accessAt(in.Plan, in.Site)
	if err != nil {
		return nil, temporalError(err)
	}
	out := []ResourceState{}
	for _, r := range rs {
		mode, err := r.Status(ctx)
		if errors.Is(err, access.ErrPartial) {
			out = append(out, ResourceState{Resource: r.Describe(), Error: err.Error()})
			continue
		}
		if err != nil {
			return out, temporalError(unreachableType(fmt.Errorf("status of %s at site %s: %w", r.Describe(), in.Site, err)))
		}
		out = append(out, ResourceState{Resource: r.Describe(), Mode: mode})
	}
	return out, nil
}

// unreachableType gives an error whose server could not be reached the
// Temporal error type "Unreachable", and leaves the rest to temporalError.
func unreachableType(err error) error {
	if drivers.IsUnreachable(err) {
		return temporalApplicationError(err.Error(), "Unreachable", false)
	}
	return err
}

// SetEpochInput raises a site's epoch and names the active site and the
// plan's roles.
type SetEpochInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`   // whose repository
	Active string `json:"active"` // the plan's active site from now on
	// Primary and Secondary are the plan's roles from now on; empty: the
	// configured ones.
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
	Op        string `json:"op"`  // the operation: a retry that finds its own op does nothing
	Min       uint64 `json:"min"` // the new epoch is above this too (the other site's epoch)
	// Adopt, when set, is the exact epoch to record: one the other site
	// already holds, learnt by this one. A site already past it refuses.
	Adopt  uint64 `json:"adopt,omitempty"`
	Reason string `json:"reason"`
}

// SetEpoch raises the epoch of the plan's repository at a site above both its
// own and Min (or to exactly Adopt), recording the active site and the
// roles. It is a compare-and-swap on epoch.json, repeated (a bounded number
// of times) when another writer came first, and the same write abandons
// every restore point whose commit under an older epoch is under way there
// (repo.UpdateEpoch). Backups, transmissions and restores started under an
// older epoch refuse to act against it. A retry that finds its own Op does
// nothing; an epoch never wraps around.
func (a *Activities) SetEpoch(ctx context.Context, in SetEpochInput) (repo.Epoch, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return repo.Epoch{}, temporalError(err)
	}
	raised := false
	next, err := r.UpdateEpoch(ctx, func(e *repo.Epoch) error {
		raised = false
		if e.Op == in.Op && in.Op != "" {
			return repo.ErrNoChange
		}
		n := in.Adopt
		if in.Adopt > 0 {
			if e.Epoch > in.Adopt {
				return drivers.Permanentf(drivers.ReasonFenced, "site %s is at epoch %d (set by site %s: %s), past epoch %d it was to learn: another switch happened meanwhile; run drorch status --plan %s",
					in.Site, e.Epoch, e.Site, e.Reason, in.Adopt, in.Plan)
			}
		} else {
			var err error
			if n, err = repo.NextEpoch(max(e.Epoch, in.Min)); err != nil {
				return fmt.Errorf("raise the epoch of plan %s at site %s: %w", in.Plan, in.Site, err)
			}
		}
		e.Epoch, e.Site, e.Active, e.Primary, e.Secondary = n, in.Site, in.Active, in.Primary, in.Secondary
		e.Op, e.Reason, e.Updated = in.Op, in.Reason, time.Now().UTC()
		raised = true
		return nil
	})
	if err != nil {
		return next, temporalError(err)
	}
	if raised {
		a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Uint64("epoch", next.Epoch).Str("active", in.Active).Str("primary", in.Primary).Int("abandoned", len(next.Abandoned)).Msg("epoch raised")
	}
	return next, nil
}

// SiteStateInput names a site whose repository state is read.
type SiteStateInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
	// Point, when given, must be a valid restore point at the site: a
	// missing one fails with NotFound (permanent).
	Point string `json:"point,omitempty"`
}

// SiteState is what a site's repository says about the plan.
type SiteState struct {
	Site       string     `json:"site"`
	Epoch      repo.Epoch `json:"epoch"`
	Latest     string     `json:"latest,omitempty"` // latest valid restore point
	LatestTime time.Time  `json:"latestTime,omitzero"`
	Standby    string     `json:"standby,omitempty"` // the point last restored into the standby target
	// StandbyTook is how long the restore of Standby took, when a warm
	// refresh recorded it: the time a failover saves by not restoring.
	StandbyTook time.Duration `json:"standbyTook,omitempty"`
	// StandbyKnown: the standby state is recorded. Known with Standby ""
	// means the target has taken writes as the active site since it last
	// held a restored point; not known, that nothing ever restored into it.
	StandbyKnown bool `json:"standbyKnown,omitempty"`
}

// siteStateProbe bounds GetSiteState's first read of a site's store.
const siteStateProbe = 10 * time.Second

// GetSiteState reads a site's epoch, latest restore point and standby state.
func (a *Activities) GetSiteState(ctx context.Context, in SiteStateInput) (SiteState, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return SiteState{}, temporalError(err)
	}
	st := SiteState{Site: in.Site}
	// The first read is bounded: a dark site's store makes the S3 client
	// retry for a long while, and switching operations ask this to learn
	// which site answers at all.
	ectx, cancel := context.WithTimeout(ctx, siteStateProbe)
	st.Epoch, err = r.GetEpoch(ectx)
	cancel()
	if err != nil {
		return st, temporalError(err)
	}
	if st.Epoch.Unsealed {
		a.log.Warn().Str("plan", in.Plan).Str("site", in.Site).Msg("epoch.json was written by an older drorch and is not authenticated yet: the next backup or switch seals it (docs/format.md, \"Sealing epoch.json\")")
	}
	if in.Point != "" {
		if _, err := a.openPointAt(ctx, r, in.Point); err != nil {
			return st, temporalError(fmt.Errorf("site %s: %w", in.Site, err))
		}
	}
	pts, err := r.Points(ctx)
	if err != nil {
		return st, temporalError(err)
	}
	if len(pts) > 0 {
		st.Latest, st.LatestTime = pts[len(pts)-1].ID, pts[len(pts)-1].Time
	}
	var sb standbyState
	if err := r.GetStaging(ctx, "standby", "state", &sb); err == nil {
		sb.Point = a.standbyMark(in.Plan, in.Site, sb.Point)
		st.Standby, st.StandbyTook, st.StandbyKnown = sb.Point, sb.Took, true
	} else if !drivers.IsNotFound(err) {
		return st, temporalError(err)
	}
	return st, nil
}

// standbyState records which point the standby target holds, so a failover
// to a warm standby does not restore it again.
type standbyState struct {
	Point   string    `json:"point"`
	Updated time.Time `json:"updated"`
	// Took is how long restoring Point took, when the writer knew it.
	Took time.Duration `json:"took,omitempty"`
}

// SwitchDNSInput names the site whose values the plan's records get.
type SwitchDNSInput struct {
	Plan string `json:"plan"`
	To   string `json:"to"`
}

// RecordState is one record set after a switch.
type RecordState struct {
	Record string   `json:"record"` // name type
	Server string   `json:"server"`
	Values []string `json:"values"`
}

// SwitchDNS points every DNS record of the plan at the site's values, one
// atomic update per record set, and returns what the authoritative servers
// answer afterwards.
func (a *Activities) SwitchDNS(ctx context.Context, in SwitchDNSInput) ([]RecordState, error) {
	p, err := a.plan(in.Plan)
	if err != nil {
		return nil, temporalError(err)
	}
	out := []RecordState{}
	for _, rc := range p.DNS {
		d, err := a.dnsFor(rc)
		if err != nil {
			return out, temporalError(err)
		}
		want := dns.Record{Name: fqdn(rc.Name, rc.Zone), Type: rc.Type, TTL: uint32(rc.TTL), Values: rc.Values[in.To]}
		if err := d.Set(ctx, want); err != nil {
			return out, temporalError(unreachableType(fmt.Errorf("switch %s %s to %s: %w", want.Name, want.Type, in.To, err)))
		}
		got, err := d.Get(ctx, want.Name, want.Type)
		if err != nil {
			return out, temporalError(unreachableType(err))
		}
		out = append(out, RecordState{Record: want.Name + " " + want.Type, Server: d.Describe(), Values: got.Values})
		a.log.Info().Str("plan", in.Plan).Str("record", want.Name).Strs("values", got.Values).Msg("DNS switched")
	}
	return out, nil
}

// fqdn makes a record name absolute: "app" in zone "example.com" is
// "app.example.com."; a name with a trailing dot is already absolute.
func fqdn(name, zone string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "." + strings.TrimSuffix(zone, ".") + "."
}

// SaveReportInput stores a switching report in a site's repository.
type SaveReportInput struct {
	Kind   string `json:"kind,omitempty"` // ReportSwitch (default) or ReportDrill
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	ID     string `json:"id"`
	Report any    `json:"report"` // a workflows.SwitchReport, stored as JSON
}

// SaveReport stores the report in the site's repository (staging/reports/,
// which is never cleaned), where ListReports finds it.
func (a *Activities) SaveReport(ctx context.Context, in SaveReportInput) error {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return temporalError(err)
	}
	if err := r.PutStaging(ctx, reportDir(in.Kind), in.ID, in.Report); err != nil {
		return temporalError(err)
	}
	if in.Kind == ReportDrill {
		var d drillVerdict
		if b, err := json.Marshal(in.Report); err == nil && json.Unmarshal(b, &d) == nil && d.Passed {
			metrics.DrillPassed(in.Plan, d.Finished)
		}
	}
	return nil
}

// drillVerdict is what metrics read of a stored drill report.
type drillVerdict struct {
	Passed   bool      `json:"passed"`
	Finished time.Time `json:"finished"`
}

// LastDrillPassed is when the newest passed drill among the site's stored
// drill reports finished; zero if none passed.
func (a *Activities) LastDrillPassed(ctx context.Context, plan, site string) (time.Time, error) {
	reps, err := a.ListReports(ctx, ListReportsInput{Kind: ReportDrill, Plan: plan, Site: site, Limit: 20})
	var last time.Time
	for _, raw := range reps {
		var d drillVerdict
		if json.Unmarshal(raw, &d) == nil && d.Passed && d.Finished.After(last) {
			last = d.Finished
		}
	}
	return last, err
}

// Kinds of stored reports.
const (
	ReportSwitch = ""      // a switching operation's SwitchReport
	ReportDrill  = "drill" // a drill's DrillReport
)

// reportDir is where reports of kind are kept in staging.
func reportDir(kind string) string {
	if kind == ReportDrill {
		return "drills"
	}
	return "reports"
}

// ListReportsInput names the site whose reports are read.
type ListReportsInput struct {
	Kind  string `json:"kind,omitempty"` // ReportSwitch (default) or ReportDrill
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Limit int    `json:"limit"` // the newest ones; 0: 10
}

// ListReports returns the newest stored switching reports, oldest first.
func (a *Activities) ListReports(ctx context.Context, in ListReportsInput) ([]json.RawMessage, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return nil, temporalError(err)
	}
	names, err := r.ListStaging(ctx, reportDir(in.Kind))
	if err != nil {
		return nil, temporalError(err)
	}
	if in.Limit <= 0 {
		in.Limit = 10
	}
	names = names[max(0, len(names)-in.Limit):]
	out := []json.RawMessage{}
	for _, n := range names {
		var rep json.RawMessage
		if err := r.GetStaging(ctx, reportDir(in.Kind), n, &rep); err != nil {
			return nil, temporalError(err)
		}
		out = append(out, rep)
	}
	return out, nil
}

// MarkStandbyInput records the point the standby target now holds.
type MarkStandbyInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point"`
	// Took is how long the restore of Point took (a warm refresh records
	// it), so that a failover can report the time it saves.
	Took time.Duration `json:"took,omitempty"`
}

// MarkStandby records in the site's repository which point its standby
// target holds (empty: none, e.g. once it has taken writes as the active
// site).
func (a *Activities) MarkStandby(ctx context.Context, in MarkStandbyInput) error {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return temporalError(err)
	}
	return temporalError(r.PutStaging(ctx, "standby", "state", standbyState{Point: a.standbyMark(in.Plan, in.Site, in.Point), Updated: time.Now().UTC(), Took: in.Took}))
}

// standbyMark is the point a site's standby target may be said to hold:
// none for a physical postgres source. Its data directory is only current
// once recovery has replayed the WAL shipped since the point, so a
// failover must always restore it (a delta restore: the chunks the
// directory holds are reused) rather than open it as it stands.
func (a *Activities) standbyMark(plan, site, point string) string {
	if sc, err := a.postgresAt(plan, site); err == nil && sc != nil && sc.Mode != "logical" {
		return ""
	}
	return point
}

// accessAt opens the access resources of a plan at a site, in order.
func (a *Activities) accessAt(plan, site string) ([]access.Access, error) {
	p, err := a.plan(plan)
	if err != nil {
		return nil, err
	}
	var out []access.Access
	for i, c := range p.Access[site] {
		r, err := all.Access(c)
		if err != nil {
			return nil, fmt.Errorf("plan %s, access at %s, item %d: %w", plan, site, i+1, err)
		}
		out = append(out, cleanAccess{Access: r, secrets: a.cfg.SecretValues()})
	}
	return out, nil
}

// dnsFor opens the DNS server of a record.
func (a *Activities) dnsFor(r *config.DNSRecord) (dns.DNS, error) { return all.DNS(r) }
