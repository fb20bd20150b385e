package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drorch/drorch/workflows"
)

func (c *cli) forgetCmd() *cobra.Command {
	var in workflows.ForgetInput
	cmd := &cobra.Command{
		Use:   "forget --plan P --site S [--dry-run]",
		Short: "Apply the plan's retention policy at a site and collect the garbage it leaves",
		Long: `Forget keeps the restore points the plan's retention policy keeps (and the
newest, the pinned and those in use), deletes the manifests of the others,
and collects garbage: chunks no manifest names are marked, and deleted by a
later run once they have stayed unnamed long enough (docs/format.md,
"Garbage collection"). In a repository that holds WAL it deletes the WAL
files no kept base backup needs (docs/format.md, "WAL retention").
--dry-run shows what it would do and changes nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, err := c.open(in.Plan, in.Site)
			if err != nil {
				return err
			}
			defer cc.Close()
			c.wait = true
			var res workflows.ForgetResult
			return c.start(cc, workflows.OpForget, in.Plan, in.Site, workflows.Forget, in, &res, func(w io.Writer) {
				printForget(w, &res)
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Site, "site", "", "site (default: the active site)")
	cmd.Flags().BoolVar(&in.DryRun, "dry-run", false, "show what would be kept, forgotten and freed; change nothing")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the result as one JSON object")
	return cmd
}

func printForget(w io.Writer, res *workflows.ForgetResult) {
	verb, freeVerb := "forgotten", "freed"
	if res.DryRun {
		verb, freeVerb = "would forget", "would free now"
	}
	fmt.Fprintf(w, "%s at %s: policy %s\n", res.Plan, res.Site, res.Policy)
	if res.InUse != "" {
		fmt.Fprintf(w, "every point kept: %s\n", res.InUse)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POINT\tSNAPSHOT\tDECISION")
	for _, d := range res.Decisions {
		what := "keep: " + strings.Join(d.Reasons, ", ")
		if !d.Keep {
			what = verb
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Point, d.Time.Local().Format(time.DateTime), what)
	}
	tw.Flush()
	g := res.GC
	fmt.Fprintf(w, "kept %d, %s %d restore points\n", len(res.Kept), verb, len(res.Forgotten))
	fmt.Fprintf(w, "chunks: %d stored (%s), %d named by manifests\n", g.Chunks, bytesText(g.ChunkBytes), g.Referenced)
	fmt.Fprintf(w, "%s %s (%d chunks)", freeVerb, bytesText(res.Frees), g.Deleted)
	if g.Marked > 0 {
		mark := "marked"
		if res.DryRun {
			mark = "would be marked"
		}
		fmt.Fprintf(w, "; %s in %d unnamed chunks %s, to be deleted by a run at least %s later",
			bytesText(res.FreesLater), g.Marked, mark, time.Duration(g.MarginSeconds*float64(time.Second)))
	}
	fmt.Fprintln(w)
	if g.NoSweep != "" {
		fmt.Fprintf(w, "nothing deleted this time: %s\n", g.NoSweep)
	}
	printForgetWAL(w, res)
}

func (c *cli) pinCmd(unpin bool) *cobra.Command {
	var in workflows.PinInput
	in.Unpin = unpin
	use, short := "pin --plan P --site S POINT", "Pin a restore point: retention never forgets it"
	if unpin {
		use, short = "unpin --plan P --site S POINT", "Unpin a restore point: retention applies to it again"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in.Point = args[0]
			cc, err := c.open(in.Plan, in.Site)
			if err != nil {
				return err
			}
			defer cc.Close()
			c.wait = true
			var res workflows.PinResult
			return c.start(cc, workflows.OpPin, in.Plan, in.Site, workflows.Pin, in, &res, func(w io.Writer) {
				state := "pinned"
				if !res.Pinned {
					state = "unpinned"
				}
				fmt.Fprintf(w, "%s %s at %s\n", state, res.Point, res.Site)
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Site, "site", "", "site (default: the active site)")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the result as one JSON object")
	return cmd
}
