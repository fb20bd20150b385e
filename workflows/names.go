package workflows

import (
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
)

// TaskQueue is the default queue workflows run on. Activities that touch a
// site run on that site's queue (SiteTaskQueue) so that they execute inside
// the site. Another base name lets several drorch installations share one
// namespace: workflows derive the site queues from the queue they run on.
const TaskQueue = "drorch"

// SiteTaskQueue is the task queue of the workers inside site, for the
// workflow queue base: "drorch-primary".
func SiteTaskQueue(base, site string) string { return base + "-" + site }

// SiteDataTaskQueue is the queue of the data-moving activities that a
// backup's upload and a transmit's copy run in parallel at site, beside its
// site queue: "drorch-primary.data". Each worker bounds how many it runs at
// once (drorch-worker --data-slots), so that the ranges of one run spread
// over every worker at the site and never starve the quick control
// activities on the site queue. The dot cannot occur in a site name, so
// this never names another site's queue.
func SiteDataTaskQueue(base, site string) string { return SiteTaskQueue(base, site) + ".data" }

// Operations, as recorded in the DrorchOperation search attribute and in ids.
const (
	OpBackup   = "backup"
	OpTransmit = "transmit"
	OpRestore  = "restore"
	OpPoints   = "points"
	OpStatus   = "status"
	OpCheck    = "check"
	OpProtect  = "protect"
	OpForget   = "forget"
)

// ScheduleID is the id of the Temporal Schedule that runs plan's protection
// cycle (drorch schedule apply); its runs are drorch/<plan>/protect-<time>.
func ScheduleID(plan string) string { return "drorch/" + plan + "/protect" }

// Query and signal names.
const (
	// QueryProgress returns a Progress: the current step, the steps done and
	// the live byte and chunk counts of the running step.
	QueryProgress = "progress"
	// SignalProgress carries an ActivityProgress from a running activity to its
	// workflow, throttled, so that QueryProgress can answer with live numbers.
	SignalProgress = "drorch-progress"
)

// Custom search attributes (type Keyword), registered on the namespace by the
// dev stack (`temporal operator search-attribute create`) and set on every run.
var (
	PlanAttr      = temporal.NewSearchAttributeKeyKeyword("DrorchPlan")
	SiteAttr      = temporal.NewSearchAttributeKeyKeyword("DrorchSite")
	OperationAttr = temporal.NewSearchAttributeKeyKeyword("DrorchOperation")
	// RPOBreachedAttr (type Bool) is set on Protect runs: true when a
	// standby site's newest valid point is older than the plan's RPO
	// objective at the end of the run.
	RPOBreachedAttr = temporal.NewSearchAttributeKeyBool("DrorchRPOBreached")
)

// SearchAttributeNames lists the custom attributes drorch needs registered.
var SearchAttributeNames = []string{PlanAttr.GetName(), SiteAttr.GetName(), OperationAttr.GetName(), RPOBreachedAttr.GetName()}

// WorkflowID builds the readable id of one run: drorch/<plan>/<op>/<time>, with
// the time in UTC to the millisecond, e.g.
// "drorch/files/backup/2026-11-22T10:01:50.123Z". Extra parts (a site) go
// between the operation and the time.
func WorkflowID(plan, op string, at time.Time, parts ...string) string {
	elems := append([]string{"drorch", plan, op}, parts...)
	elems = append(elems, at.UTC().Format("2006-01-02T15:04:05.000Z"))
	return strings.Join(elems, "/")
}

// Attributes returns the search attributes of a run.
func Attributes(plan, site, op string) temporal.SearchAttributes {
	updates := []temporal.SearchAttributeUpdate{PlanAttr.ValueSet(plan), OperationAttr.ValueSet(op)}
	if site != "" {
		updates = append(updates, SiteAttr.ValueSet(site))
	}
	return temporal.NewSearchAttributes(updates...)
}

// Switching operations, signals and ids.
const (
	OpFailover          = "failover"
	OpFailback          = "failback"
	OpPermanentFailover = "permanent-failover"
	OpDrill             = "drill"

	// SignalApprove released a recovery step waiting for an operator in
	// runs started before UpdateApprove; it is kept for their replay.
	SignalApprove = "approve"
	// UpdateApprove releases the recovery step waiting for an operator
	// (ApproveUpdate); it is refused when no step, or another one, waits.
	UpdateApprove = "approve"
	// UpdateComplete tells a data recovery (Failback) to complete
	// (CompleteSignal); it is refused while the primary has not caught up,
	// unless forced.
	UpdateComplete = "complete"
	// SignalComplete tells a data recovery (Failback) to complete once the
	// primary has caught up.
	SignalComplete = "complete"

	ModePlanned   = "planned"
	ModeUnplanned = "unplanned"
)

// SwitchWorkflowID is the one id every switching workflow of a plan uses, so
// that Temporal refuses a second one while one runs.
func SwitchWorkflowID(plan string) string { return "drorch/" + plan + "/switch" }
