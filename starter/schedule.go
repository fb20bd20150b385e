package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go.temporal.io/api/operatorservice/v1"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/workflows"
)

// Memo keys drorch writes on the action of the schedules it manages: the
// digest of what apply last set (so an unchanged config changes nothing)
// and the config's paused then (so a pause by hand survives an apply).
const (
	memoDigest = "drorchScheduleDigest"
	memoPaused = "drorchSchedulePaused"
)

// minCatchup is Temporal's smallest catch-up window.
const minCatchup = 10 * time.Second

func (c *cli) scheduleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule apply|list|delete|pause|unpause|trigger",
		Short: "Run each plan's protection cycle by itself, as a Temporal Schedule per plan (drorch/<plan>/protect)",
	}
	cmd.AddCommand(c.scheduleApplyCmd(), c.scheduleListCmd(), c.scheduleDeleteCmd(),
		c.schedulePauseCmd(true), c.schedulePauseCmd(false), c.scheduleTriggerCmd())
	return cmd
}

func (c *cli) scheduleApplyCmd() *cobra.Command {
	var prune bool
	var only string
	cmd := &cobra.Command{
		Use:   "apply [--plan P] [--prune]",
		Short: "Create or update the schedule of every plan with a schedule in the config; unchanged ones are left alone",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, cc, err := c.connect()
			if err != nil {
				return err
			}
			defer cc.Close()
			if only != "" {
				if _, err := cfg.Plan(only); err != nil {
					return err
				}
			}
			ctx := context.Background()
			if err := searchAttributesRegistered(ctx, cc); err != nil {
				return err
			}
			want := map[string]bool{}
			var failed []string
			for _, name := range planNames(cfg) {
				p, _ := cfg.Plan(name)
				if p.Schedule == nil || only != "" && name != only {
					continue
				}
				want[workflows.ScheduleID(name)] = true
				what, err := c.applySchedule(ctx, cc, name, p.Schedule)
				if err != nil {
					failed = append(failed, name)
					fmt.Fprintf(os.Stderr, "plan %s: %v\n", name, err)
					continue
				}
				fmt.Printf("plan %s: %s (schedule %s)\n", name, what, workflows.ScheduleID(name))
			}
			failed = append(failed, c.applyWALShipping(ctx, cc, cfg, only, prune)...)
			if only == "" {
				ids, err := drorchSchedules(ctx, cc)
				if err != nil {
					return err
				}
				for _, id := range ids {
					if want[id] {
						continue
					}
					name := planOfSchedule(id)
					if p, err := cfg.Plan(name); err == nil && p.Schedule != nil {
						continue
					}
					if !prune {
						fmt.Printf("plan %s: kept, not in the config (schedule %s; apply --prune deletes it)\n", name, id)
						continue
					}
					if err := cc.ScheduleClient().GetHandle(ctx, id).Delete(ctx); err != nil {
						failed = append(failed, name)
						fmt.Fprintf(os.Stderr, "plan %s: delete schedule %s: %v\n", name, id, err)
						continue
					}
					fmt.Printf("plan %s: deleted (schedule %s)\n", name, id)
				}
			}
			if len(failed) > 0 {
				return fmt.Errorf("schedule apply failed for plan(s) %s", strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&prune, "prune", false, "delete the schedules of plans that no longer have one in the config, and stop the WAL shipping of plans no longer in it")
	cmd.Flags().StringVar(&only, "plan", "", "apply only this plan's schedule")
	return cmd
}

func planNames(cfg *config.Config) []string {
	var names []string
	for name := range cfg.Plans {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// planOfSchedule is the plan of a schedule id drorch/<plan>/protect.
func planOfSchedule(id string) string {
	return strings.TrimSuffix(strings.TrimPrefix(id, "drorch/"), "/protect")
}

// drorchSchedules lists the ids of the schedules drorch manages, in order.
func drorchSchedules(ctx context.Context, cc *clientConn) ([]string, error) {
	it, err := cc.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	var ids []string
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("list schedules: %w", err)
		}
		if strings.HasPrefix(e.ID, "drorch/") && strings.HasSuffix(e.ID, "/protect") {
			ids = append(ids, e.ID)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// desired is the schedule a plan's config asks for.
type desired struct {
	spec     client.ScheduleSpec
	action   *client.ScheduleWorkflowAction
	policy   client.SchedulePolicies
	paused   bool
	digest   string
	windowed bool // the window is in the spec, not only checked by Protect
}

func (c *cli) desiredSchedule(plan string, s *config.Schedule) (desired, error) {
	var d desired
	d.spec.TimeZoneName = s.TimeZone
	d.spec.Jitter = s.Jitter
	switch {
	case s.Cron != "":
		d.spec.CronExpressions = []string{s.Cron}
		d.policy.CatchupWindow = cronCatchup(s)
	default:
		if cal, ok := windowCalendars(s); ok {
			d.spec.Calendars, d.windowed = cal, true
		} else {
			d.spec.Intervals = []client.ScheduleIntervalSpec{{Every: s.Every}}
		}
		d.policy.CatchupWindow = min(max(s.Every, minCatchup), maxCatchup)
	}
	d.policy.Overlap = enums.SCHEDULE_OVERLAP_POLICY_SKIP
	d.paused = s.Paused
	in := workflows.ProtectInput{Plan: plan}
	// What apply decides from, in a form that does not depend on how the
	// server echoes a spec back.
	key, err := json.Marshal(struct {
		Spec     client.ScheduleSpec
		Input    workflows.ProtectInput
		Queue    string
		Overlap  enums.ScheduleOverlapPolicy
		Catchup  time.Duration
		Paused   bool
		Workflow string
	}{d.spec, in, c.taskQueue, d.policy.Overlap, d.policy.CatchupWindow, d.paused, "Protect"})
	if err != nil {
		return d, err
	}
	sum := sha256.Sum256(key)
	d.digest = hex.EncodeToString(sum[:12])
	d.action = &client.ScheduleWorkflowAction{
		ID: workflows.ScheduleID(plan), Workflow: workflows.Protect, Args: []any{in}, TaskQueue: c.taskQueue,
		TypedSearchAttributes: workflows.Attributes(plan, "", workflows.OpProtect),
		Memo:                  map[string]any{memoDigest: d.digest, memoPaused: d.paused},
	}
	return d, nil
}

// maxCatchup bounds the catch-up window of a schedule with long gaps.
const maxCatchup = 7 * 24 * time.Hour

// cronCatchup is the catch-up window of a cron schedule: about one
// interval, the smallest gap between its fire times (config
// Schedule.Interval; 24h for an expression only Temporal parses), within
// [minCatchup, maxCatchup]. A daily "0 2 * * *" down from 01:30 to 03:30
// still runs that day's cycle, and a cluster down for a week replays at
// most about one.
func cronCatchup(s *config.Schedule) time.Duration {
	d, _ := s.Interval()
	return min(max(d, minCatchup), maxCatchup)
}

// windowCalendars expresses an every-schedule with a window as calendar
// specs that fire only inside the window, when the interval divides an
// hour (in whole minutes) and the window starts and ends on the hour.
// Otherwise the runs outside the window start and Protect skips them.
func windowCalendars(s *config.Schedule) ([]client.ScheduleCalendarSpec, bool) {
	if s.Window == "" || s.Every%time.Minute != 0 || s.Every > time.Hour || time.Hour%s.Every != 0 {
		return nil, false
	}
	w, err := config.ParseWindow(s.Window)
	if err != nil || w.Start%60 != 0 || w.End%60 != 0 {
		return nil, false
	}
	minutes := []client.ScheduleRange{{Start: 0, End: 59, Step: int(s.Every / time.Minute)}}
	hours := func(from, to int) client.ScheduleCalendarSpec { // to included
		return client.ScheduleCalendarSpec{
			Second: []client.ScheduleRange{{Start: 0}}, Minute: minutes, Hour: []client.ScheduleRange{{Start: from, End: to}},
			DayOfMonth: []client.ScheduleRange{{Start: 1, End: 31}}, Month: []client.ScheduleRange{{Start: 1, End: 12}},
			DayOfWeek: []client.ScheduleRange{{Start: 0, End: 6}}, Comment: "window " + s.Window,
		}
	}
	start, end := w.Start/60, w.End/60
	if start < end {
		return []client.ScheduleCalendarSpec{hours(start, end-1)}, true
	}
	out := []client.ScheduleCalendarSpec{hours(start, 23)}
	if end > 0 {
		out = append(out, hours(0, end-1))
	}
	return out, true
}

// applySchedule creates or updates plan's schedule; it says which it did.
func (c *cli) applySchedule(ctx context.Context, cc *clientConn, plan string, s *config.Schedule) (string, error) {
	d, err := c.desiredSchedule(plan, s)
	if err != nil {
		return "", err
	}
	id := workflows.ScheduleID(plan)
	h := cc.ScheduleClient().GetHandle(ctx, id)
	desc, err := h.Describe(ctx)
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		note := ""
		if d.paused {
			note = "paused in the config (schedule.paused: true)"
		}
		_, err := cc.ScheduleClient().Create(ctx, client.ScheduleOptions{
			ID: id, Spec: d.spec, Action: d.action, Overlap: d.policy.Overlap, CatchupWindow: d.policy.CatchupWindow,
			Paused: d.paused, Note: note, TypedSearchAttributes: workflows.Attributes(plan, "", workflows.OpProtect),
		})
		if err != nil {
			return "", fmt.Errorf("create schedule %s: %w", id, err)
		}
		return "created" + windowNote(s, d), nil
	}
	if err != nil {
		return "", fmt.Errorf("describe schedule %s: %w", id, err)
	}
	digest, wasPaused, ok := actionMemo(desc.Schedule.Action)
	if ok && digest == d.digest {
		return "unchanged", nil
	}
	err = h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		sch := in.Description.Schedule
		sch.Spec, sch.Action = &d.spec, d.action
		sch.Policy = &client.SchedulePolicies{Overlap: d.policy.Overlap, CatchupWindow: d.policy.CatchupWindow}
		if sch.State == nil {
			sch.State = &client.ScheduleState{}
		}
		// A pause or unpause by hand stands until the config's paused
		// itself changes.
		if !ok || wasPaused != d.paused {
			sch.State.Paused = d.paused
			sch.State.Note = fmt.Sprintf("drorch schedule apply: paused: %t in the config", d.paused)
		}
		return &client.ScheduleUpdate{Schedule: &sch}, nil
	}})
	if err != nil {
		return "", fmt.Errorf("update schedule %s: %w", id, err)
	}
	return "updated" + windowNote(s, d), nil
}

func windowNote(s *config.Schedule, d desired) string {
	switch {
	case s.Window == "":
		return ""
	case d.windowed:
		return ", runs start only inside the window " + s.Window
	}
	return ", runs outside the window " + s.Window + " start and end at once as skipped"
}

// actionMemo reads what apply recorded on a schedule's action.
func actionMemo(a client.ScheduleAction) (digest string, paused, ok bool) {
	wa, isWF := a.(*client.ScheduleWorkflowAction)
	if !isWF || wa.Memo == nil {
		return "", false, false
	}
	dc := converter.GetDefaultDataConverter()
	read := func(key string, v any) bool {
		switch x := wa.Memo[key].(type) {
		case *commonpb.Payload:
			return dc.FromPayload(x, v) == nil
		case nil:
			return false
		default:
			b, err := json.Marshal(x)
			return err == nil && json.Unmarshal(b, v) == nil
		}
	}
	ok = read(memoDigest, &digest)
	read(memoPaused, &paused)
	return digest, paused, ok
}

// scheduleState is one schedule as `drorch schedule list` shows it.
type scheduleState struct {
	Plan       string      `json:"plan"`
	ID         string      `json:"id"`
	Spec       string      `json:"spec"`
	Paused     bool        `json:"paused"`
	Note       string      `json:"note,omitempty"`
	NextRuns   []time.Time `json:"nextRuns"`
	Running    []string    `json:"running"` // workflow ids
	LastRun    string      `json:"lastRun,omitempty"`
	LastStart  time.Time   `json:"lastStart,omitzero"`
	LastResult string      `json:"lastResult,omitempty"` // the last run's status: Running, Completed, Failed…
	Actions    int         `json:"actions"`
	Skipped    int         `json:"skippedOverlap"`
	Missed     int         `json:"missedCatchupWindow"`
	InConfig   bool        `json:"inConfig"`
}

func (c *cli) scheduleListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [--json]",
		Short: "Show drorch's schedules: next runs, last result, running, skipped and missed counts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, cc, err := c.connect()
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx := context.Background()
			ids, err := drorchSchedules(ctx, cc)
			if err != nil {
				return err
			}
			out := []scheduleState{}
			for _, id := range ids {
				st, err := describeSchedule(ctx, cc, id)
				if err != nil {
					return err
				}
				if p, err := cfg.Plan(st.Plan); err == nil && p.Schedule != nil {
					st.InConfig = true
				}
				out = append(out, st)
			}
			if c.json {
				return printJSON(os.Stdout, out)
			}
			printSchedules(os.Stdout, out)
			return nil
		},
	}
	cmd.Flags().BoolVar(&c.json, "json", false, "print the schedules as JSON")
	return cmd
}

func describeSchedule(ctx context.Context, cc *clientConn, id string) (scheduleState, error) {
	desc, err := cc.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
	if err != nil {
		return scheduleState{}, fmt.Errorf("describe schedule %s: %w", id, err)
	}
	st := scheduleState{Plan: planOfSchedule(id), ID: id, NextRuns: desc.Info.NextActionTimes, Running: []string{},
		Actions: desc.Info.NumActions, Skipped: desc.Info.NumActionsSkippedOverlap, Missed: desc.Info.NumActionsMissedCatchupWindow}
	if st.NextRuns == nil {
		st.NextRuns = []time.Time{}
	}
	if s := desc.Schedule.State; s != nil {
		st.Paused, st.Note = s.Paused, s.Note
	}
	st.Spec = specText(desc.Schedule.Spec)
	for _, r := range desc.Info.RunningWorkflows {
		st.Running = append(st.Running, r.WorkflowID)
	}
	if n := len(desc.Info.RecentActions); n > 0 {
		last := desc.Info.RecentActions[n-1]
		st.LastStart = last.ActualTime
		if w := last.StartWorkflowResult; w != nil {
			st.LastRun = w.WorkflowID
			if d, err := cc.DescribeWorkflowExecution(ctx, w.WorkflowID, w.FirstExecutionRunID); err == nil {
				st.LastResult = strings.TrimPrefix(d.GetWorkflowExecutionInfo().GetStatus().String(), "WORKFLOW_EXECUTION_STATUS_")
			}
		}
	}
	return st, nil
}

func specText(s *client.ScheduleSpec) string {
	if s == nil {
		return ""
	}
	var parts []string
	for _, i := range s.Intervals {
		parts = append(parts, "every "+i.Every.String())
	}
	parts = append(parts, s.CronExpressions...)
	for _, c := range s.Calendars {
		if c.Comment != "" {
			parts = append(parts, "calendar ("+c.Comment+")")
		} else {
			parts = append(parts, "calendar")
		}
	}
	if s.TimeZoneName != "" {
		parts = append(parts, "in "+s.TimeZoneName)
	}
	if s.Jitter > 0 {
		parts = append(parts, "jitter "+s.Jitter.String())
	}
	return strings.Join(parts, ", ")
}

func printSchedules(w io.Writer, out []scheduleState) {
	if len(out) == 0 {
		fmt.Fprintln(w, "no drorch schedules: add schedule: {every: 15m} to a plan and run drorch schedule apply")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PLAN\tSPEC\tSTATE\tNEXT RUN\tLAST RESULT\tRUNNING\tSKIPPED\tMISSED")
	for _, s := range out {
		state := "active"
		if s.Paused {
			state = "paused"
			if s.Note != "" {
				state += " (" + s.Note + ")"
			}
		}
		if !s.InConfig {
			state += ", not in the config"
		}
		next := "-"
		if len(s.NextRuns) > 0 {
			next = s.NextRuns[0].Local().Format(time.DateTime)
		}
		last := "-"
		if s.LastRun != "" {
			last = strings.ToLower(s.LastResult) + " " + s.LastStart.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", s.Plan, s.Spec, state, next, last, len(s.Running), s.Skipped, s.Missed)
	}
	tw.Flush()
}

// scheduleHandle checks the plan and returns its schedule's handle.
func (c *cli) scheduleHandle(plan string) (*clientConn, client.ScheduleHandle, error) {
	if plan == "" {
		return nil, nil, errors.New("--plan is required")
	}
	_, cc, err := c.connect()
	if err != nil {
		return nil, nil, err
	}
	return cc, cc.ScheduleClient().GetHandle(context.Background(), workflows.ScheduleID(plan)), nil
}

func scheduleErr(plan, what string, err error) error {
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return fmt.Errorf("plan %s has no schedule %s: add schedule: to the plan and run drorch schedule apply", plan, workflows.ScheduleID(plan))
	}
	return fmt.Errorf("%s schedule %s: %w", what, workflows.ScheduleID(plan), err)
}

func (c *cli) scheduleDeleteCmd() *cobra.Command {
	var plan string
	cmd := &cobra.Command{
		Use:   "delete --plan P",
		Short: "Delete a plan's schedule (runs it started are left alone)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, h, err := c.scheduleHandle(plan)
			if err != nil {
				return err
			}
			defer cc.Close()
			if err := h.Delete(context.Background()); err != nil {
				return scheduleErr(plan, "delete", err)
			}
			fmt.Printf("plan %s: deleted (schedule %s)\n", plan, h.GetID())
			return nil
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (required)")
	return cmd
}

func (c *cli) schedulePauseCmd(pause bool) *cobra.Command {
	var plan, note string
	use, short := "pause", "Pause a plan's schedule: no cycle starts until it is unpaused"
	if !pause {
		use, short = "unpause", "Unpause a plan's schedule"
	}
	cmd := &cobra.Command{
		Use:   use + " --plan P [--note TEXT]",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, h, err := c.scheduleHandle(plan)
			if err != nil {
				return err
			}
			defer cc.Close()
			ctx := context.Background()
			if pause {
				err = h.Pause(ctx, client.SchedulePauseOptions{Note: note})
			} else {
				err = h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: note})
			}
			if err != nil {
				return scheduleErr(plan, use, err)
			}
			fmt.Printf("plan %s: %sd (schedule %s)\n", plan, use, h.GetID())
			return nil
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&note, "note", "", "why, shown by drorch schedule list and in the Web UI")
	return cmd
}

func (c *cli) scheduleTriggerCmd() *cobra.Command {
	var plan string
	cmd := &cobra.Command{
		Use:   "trigger --plan P",
		Short: "Start a protection cycle of a plan now, as its schedule would (skipped if one is running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, h, err := c.scheduleHandle(plan)
			if err != nil {
				return err
			}
			defer cc.Close()
			if err := h.Trigger(context.Background(), client.ScheduleTriggerOptions{Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP}); err != nil {
				return scheduleErr(plan, "trigger", err)
			}
			fmt.Printf("plan %s: triggered (schedule %s); drorch schedule list shows the run\n", plan, h.GetID())
			return nil
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (required)")
	return cmd
}

// searchAttributesRegistered checks that the namespace knows drorch's
// search attributes: a Protect run that sets one the namespace lacks fails
// its workflow task again and again instead of running, so a schedule is
// not made until they are there.
func searchAttributesRegistered(ctx context.Context, cc *clientConn) error {
	resp, err := cc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: cc.namespace})
	if err != nil {
		return fmt.Errorf("list the search attributes of namespace %s: %w", cc.namespace, err)
	}
	types := map[string]string{
		workflows.PlanAttr.GetName(): "Keyword", workflows.SiteAttr.GetName(): "Keyword",
		workflows.OperationAttr.GetName(): "Keyword", workflows.RPOBreachedAttr.GetName(): "Bool",
	}
	var missing []string
	for _, name := range workflows.SearchAttributeNames {
		if _, ok := resp.GetCustomAttributes()[name]; !ok {
			missing = append(missing, fmt.Sprintf("  temporal operator search-attribute create --namespace %s --name %s --type %s", cc.namespace, name, types[name]))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("namespace %s lacks drorch's search attributes, which the protection cycle sets; register them first:\n%s",
			cc.namespace, strings.Join(missing, "\n"))
	}
	return nil
}
