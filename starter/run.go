package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/client"
	"golang.org/x/term"

	"github.com/drorch/drorch/workflows"
)

// clientConn is a Temporal client and the namespace it talks to.
type clientConn struct {
	client.Client
	namespace string
}

// started describes a started run, printed by commands without --wait.
type started struct {
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	URL        string `json:"url"`
}

// start runs workflow wf with input in, then either prints the started run
// or waits for the result (into res) showing live progress, and prints it
// with human.
func (c *cli) start(cc *clientConn, op, plan, site string, wf any, in any, res any, human func(io.Writer)) error {
	return c.startWith(cc, client.StartWorkflowOptions{ID: workflows.WorkflowID(plan, op, time.Now())}, op, plan, site, wf, in, res, human)
}

// startWith is start with the id and its policies given: switching
// workflows share one id per plan so that Temporal refuses a second one.
func (c *cli) startWith(cc *clientConn, opts client.StartWorkflowOptions, op, plan, site string, wf any, in any, res any, human func(io.Writer)) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	opts.TaskQueue = c.taskQueue
	opts.TypedSearchAttributes = workflows.Attributes(plan, site, op)
	run, err := cc.ExecuteWorkflow(ctx, opts, wf, in)
	var running *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &running) {
		return fmt.Errorf("start %s: a switching operation of plan %s is already running (workflow %s, run %s); wait for it to end, or approve or cancel it (drorch approve / drorch cancel --plan %s)", op, plan, opts.ID, running.RunId, plan)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", op, err)
	}
	st := started{WorkflowID: run.GetID(), RunID: run.GetRunID(), URL: c.runURL(cc.namespace, run.GetID(), run.GetRunID())}
	if !c.wait {
		if c.json {
			return printJSON(os.Stdout, st)
		}
		fmt.Printf("started %s %s\n  run %s\n  %s\n", op, st.WorkflowID, st.RunID, st.URL)
		return nil
	}
	if !c.json && op != workflows.OpPoints && op != workflows.OpStatus {
		fmt.Fprintf(os.Stderr, "%s %s\n  %s\n", op, st.WorkflowID, st.URL)
	}
	done := make(chan error, 1)
	go func() { done <- run.Get(ctx, res) }()
	if op == workflows.OpPoints || op == workflows.OpStatus {
		// Quick reads: their result is the output, with no progress line.
		err = <-done
	} else {
		err = c.watch(ctx, cc, run, done)
	}
	if err != nil {
		if c.json {
			_ = printJSON(os.Stdout, map[string]any{"workflowId": st.WorkflowID, "runId": st.RunID, "error": errorText(err)})
		}
		return fmt.Errorf("%s failed: %s", op, errorText(err))
	}
	if c.json {
		return printJSON(os.Stdout, res)
	}
	human(os.Stdout)
	return nil
}

// watch shows progress until the run ends. It asks the workflow for its
// step (query) and the running activity for its latest heartbeat, which is
// fresher than the progress the activity signals to the workflow.
func (c *cli) watch(ctx context.Context, cc *clientConn, run client.WorkflowRun, done <-chan error) error {
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	show := !c.json
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var r rate
	lastLine := time.Time{}
	for {
		select {
		case err := <-done:
			if show && tty {
				fmt.Fprint(os.Stderr, "\r\033[K")
			}
			return err
		case <-tick.C:
			if !show {
				continue
			}
			p, ok := progressOf(ctx, cc, run)
			if !ok {
				continue
			}
			line := r.line(p)
			if tty {
				fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
			} else if time.Since(lastLine) >= 5*time.Second {
				fmt.Fprintln(os.Stderr, line)
				lastLine = time.Now()
			}
		}
	}
}

// progressOf returns the workflow's progress with the running activities'
// latest heartbeats folded in (foldLive).
func progressOf(ctx context.Context, cc *clientConn, run client.WorkflowRun) (workflows.Progress, bool) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var p workflows.Progress
	runID := run.GetRunID()
	if strings.HasSuffix(run.GetID(), "/switch") {
		// A data recovery continues as new: ask the newest run.
		runID = ""
	}
	v, err := cc.QueryWorkflow(qctx, run.GetID(), runID, workflows.QueryProgress)
	if err != nil || v.Get(&p) != nil {
		return p, false
	}
	desc, err := cc.DescribeWorkflowExecution(qctx, run.GetID(), runID)
	if err != nil {
		return p, true
	}
	p.Retrying = retrying(desc.GetPendingActivities())
	foldLive(&p, desc.GetPendingActivities())
	return p, true
}

// retrying describes a pending activity being retried: its attempt and
// last failure, "" when none is.
func retrying(pending []*workflowpb.PendingActivityInfo) string {
	for _, pa := range pending {
		if pa.GetAttempt() > 1 && pa.GetLastFailure() != nil {
			return fmt.Sprintf("%s attempt %d, last: %s", pa.GetActivityType().GetName(), pa.GetAttempt(), pa.GetLastFailure().GetMessage())
		}
	}
	return ""
}

// rate turns successive progress readings into a transfer rate.
type rate struct {
	at    time.Time
	bytes int64
	bps   float64
}

func (r *rate) line(p workflows.Progress) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s", p.Step)
	l := p.Live
	if l == nil {
		if p.Waiting != "" {
			fmt.Fprintf(&b, " waiting for %s", p.Waiting)
		}
		if p.Retrying != "" {
			fmt.Fprintf(&b, " retrying: %s", p.Retrying)
		}
		return b.String()
	}
	if !r.at.IsZero() && l.Updated.After(r.at) {
		if d := l.Updated.Sub(r.at).Seconds(); d > 0 {
			r.bps = float64(l.BytesDone-r.bytes) / d
		}
	}
	if l.Updated.After(r.at) {
		r.at, r.bytes = l.Updated, l.BytesDone
	}
	if l.BytesTotal > 0 {
		frac := min(float64(l.BytesDone)/float64(l.BytesTotal), 1)
		const width = 24
		n := int(frac * width)
		fmt.Fprintf(&b, " [%s%s] %3.0f%%", strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100)
		fmt.Fprintf(&b, " %s/%s", bytesText(l.BytesDone), bytesText(l.BytesTotal))
	} else {
		fmt.Fprintf(&b, " %s", bytesText(l.BytesDone))
	}
	if r.bps > 0 {
		fmt.Fprintf(&b, " %s/s", bytesText(int64(r.bps)))
	}
	fmt.Fprintf(&b, " chunks %d (new %d, %s)", l.ChunksDone, l.ChunksNew, bytesText(l.BytesNew))
	if l.FilesTotal > 0 {
		fmt.Fprintf(&b, " files %d/%d", l.FilesDone, l.FilesTotal)
	}
	if l.Scanned > 0 {
		fmt.Fprintf(&b, " scanned %d", l.Scanned) // objects listed, entries read or written
	}
	return b.String()
}

func (c *cli) runURL(namespace, id, runID string) string {
	return fmt.Sprintf("%s/namespaces/%s/workflows/%s/%s/history", strings.TrimSuffix(c.uiAddress, "/"),
		url.PathEscape(namespace), url.PathEscape(id), url.PathEscape(runID))
}

// errorText is the innermost application error's message: what went wrong,
// without the layers of "workflow execution error" around it.
func errorText(err error) string {
	app := workflows.Innermost(err)
	if app == nil {
		return err.Error()
	}
	msg := app.Message()
	if t := app.Type(); t != "" && !strings.Contains(msg, t) {
		msg += " (" + t + ")"
	}
	return msg
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
