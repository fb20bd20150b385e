package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drorch/drorch/workflows"
)

func (c *cli) checkCmd() *cobra.Command {
	var in workflows.CheckInput
	var subset string
	cmd := &cobra.Command{
		Use:   "check --plan P --site S [--read-data | --read-data-subset N%]",
		Short: "Verify a plan's repository at a site: manifests, chunks present and of plausible size, optionally chunk contents",
		Long: `Verify a plan's repository at a site. Every manifest must open and decode, and
every chunk a restore point names must be present with a size such a chunk can
have. --read-data also reads every chunk back, decrypts, decompresses and
hashes it against its id; --read-data-subset N% does so for a random N% of the
chunks, a different share each run.

Each damaged or missing chunk is recorded in the repository: the next backup
(or transmit to this site) that still has its data writes it again.

Exit status 0: no damage. 1: damage found (listed), or the check could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if subset != "" {
				if in.ReadData {
					return fmt.Errorf("--read-data and --read-data-subset: give one")
				}
				pct, err := parsePercent(subset)
				if err != nil {
					return fmt.Errorf("--read-data-subset %q: %w", subset, err)
				}
				in.ReadDataPercent = pct
			}
			cc, err := c.open(in.Plan, in.Site)
			if err != nil {
				return err
			}
			defer cc.Close()
			var res workflows.CheckResult
			if err := c.start(cc, workflows.OpCheck, in.Plan, in.Site, workflows.Check, in, &res, func(w io.Writer) { printCheck(w, res) }); err != nil {
				return err
			}
			if c.wait && !res.OK {
				return fmt.Errorf("%s at %s: %d damaged objects (%d of %d restore points unreadable, %d chunks missing, %d damaged)",
					res.Repository, res.Site, res.DamageTotal, res.PointsDamaged, res.Points, res.ChunksMissing, res.ChunksDamaged)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Site, "site", "", "site whose repository is checked (default: the active site)")
	cmd.Flags().BoolVar(&in.ReadData, "read-data", false, "read, decrypt, decompress and hash every chunk")
	cmd.Flags().StringVar(&subset, "read-data-subset", "", "read and hash a random share of the chunks, e.g. 10%")
	c.waitFlags(cmd)
	return cmd
}

// parsePercent reads "10%", "10" or "2.5%" as a share from 0 (exclusive) to 100.
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%")), 64)
	if err != nil || v <= 0 || v > 100 {
		return 0, fmt.Errorf("want a percentage over 0 and at most 100, such as 10%%")
	}
	return v, nil
}

func printCheck(w io.Writer, res workflows.CheckResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	verdict := "OK"
	if !res.OK {
		verdict = fmt.Sprintf("DAMAGED: %d objects", res.DamageTotal)
	}
	fmt.Fprintf(tw, "repository\t%s (site %s)\n", res.Repository, res.Site)
	fmt.Fprintf(tw, "result\t%s\n", verdict)
	fmt.Fprintf(tw, "restore points\t%d (%d unreadable)\n", res.Points, res.PointsDamaged)
	fmt.Fprintf(tw, "chunks\t%d named (%d missing, %d damaged)\n", res.Chunks, res.ChunksMissing, res.ChunksDamaged)
	if res.ReadPercent > 0 {
		fmt.Fprintf(tw, "read back\t%d chunks, %s verified (%g%% chosen)\n", res.ChunksRead, bytesText(res.BytesRead), res.ReadPercent)
	} else {
		fmt.Fprintf(tw, "read back\tnone (presence and size only; --read-data reads them)\n")
	}
	fmt.Fprintf(tw, "duration\t%s\n", res.Duration.D().Round(time.Millisecond))
	tw.Flush()
	if len(res.Damage) == 0 {
		return
	}
	fmt.Fprintln(w, "\ndamaged objects:")
	for _, d := range res.Damage {
		fmt.Fprintf(w, "  %s %s\n    %s\n", d.Kind, d.Object, d.Problem)
		if d.Kind == "chunk" && d.Point != "" {
			fmt.Fprintf(w, "    needed by %q in restore point %s\n", d.Path, d.Point)
		}
	}
	if n := res.DamageTotal - int64(len(res.Damage)); n > 0 {
		fmt.Fprintf(w, "  … and %d more\n", n)
	}
	fmt.Fprintln(w, "\nThe next backup that still has the data of a damaged chunk uploads it again; run check again afterwards.")
}
