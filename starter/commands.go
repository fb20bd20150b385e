package main

import (
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/drorch/drorch/workflows"
)

func (c *cli) backupCmd() *cobra.Command {
	var in workflows.BackupInput
	cmd := &cobra.Command{
		Use:   "backup --plan P [--site S]",
		Short: "Take a restore point of a plan at its active site",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, err := c.open(in.Plan, in.Site)
			if err != nil {
				return err
			}
			defer cc.Close()
			var res workflows.BackupResult
			return c.start(cc, workflows.OpBackup, in.Plan, in.Site, workflows.Backup, in, &res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "restore point\t%s\n", res.Point)
				fmt.Fprintf(tw, "site\t%s (%s, epoch %d)\n", res.Site, res.Repository, res.Epoch)
				fmt.Fprintf(tw, "source\t%s\n", res.Source)
				fmt.Fprintf(tw, "entries\t%d (%d files, %s)\n", res.Totals.Entries, res.Totals.Files, bytesText(res.Totals.Bytes))
				fmt.Fprintf(tw, "read\t%s\n", bytesText(res.BytesRead))
				if res.Unchanged > 0 {
					fmt.Fprintf(tw, "unchanged\t%d files, %s not read (same size and mtime as in %s)\n", res.Unchanged, bytesText(res.BytesUnchanged), res.Parent)
				}
				fmt.Fprintf(tw, "new\t%s in %d of %d chunks, uploaded %s\n", bytesText(res.BytesNew), res.ChunksNew, res.Chunks, bytesText(res.Uploaded))
				if res.Skipped > 0 {
					fmt.Fprintf(tw, "skipped\t%d devices, FIFOs or sockets\n", res.Skipped)
				}
				for _, w := range res.HookWarnings {
					fmt.Fprintf(tw, "warning\t%s\n", w)
				}
				fmt.Fprintf(tw, "duration\t%s\n", res.Duration.D().Round(time.Millisecond))
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Site, "site", "", "site to back up (default: the plan's active site)")
	cmd.Flags().BoolVar(&in.Full, "full", false, "read every file, even those unchanged (same size and mtime) since the last restore point")
	c.waitFlags(cmd)
	return cmd
}

func (c *cli) transmitCmd() *cobra.Command {
	var in workflows.TransmitInput
	cmd := &cobra.Command{
		Use:   "transmit --plan P [--from S] [--to S] [--point ID]",
		Short: "Copy a restore point to another site, sending only the chunks it lacks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, err := c.open(in.Plan, in.From, in.To)
			if err != nil {
				return err
			}
			defer cc.Close()
			var res workflows.TransmitResult
			return c.start(cc, workflows.OpTransmit, in.Plan, in.To, workflows.Transmit, in, &res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "restore point\t%s (%s)\n", res.Point, bytesText(res.Bytes))
				fmt.Fprintf(tw, "from → to\t%s → %s\n", res.From, res.To)
				if res.AlreadyThere {
					fmt.Fprintf(tw, "copied\tnothing: %s already held it\n", res.To)
				} else {
					fmt.Fprintf(tw, "copied\t%d of %d chunks, %s\n", res.ChunksCopied, res.Chunks, bytesText(res.BytesCopied))
				}
				fmt.Fprintf(tw, "RPO\t%s\n", res.RPO.D().Round(time.Second))
				fmt.Fprintf(tw, "duration\t%s\n", res.Duration.D().Round(time.Millisecond))
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.From, "from", "", "site to copy from (default: the plan's active site)")
	cmd.Flags().StringVar(&in.To, "to", "", "site to copy to (default: the other site)")
	cmd.Flags().StringVar(&in.Point, "point", "", "restore point id (default: the latest at --from)")
	c.waitFlags(cmd)
	return cmd
}

func (c *cli) restoreCmd() *cobra.Command {
	var in workflows.RestoreInput
	var at string
	cmd := &cobra.Command{
		Use:   "restore --plan P --site S [--point ID] [--at TIME] [--to PATH] [--setuid] [--force]",
		Short: "Restore a restore point held at a site into the plan's source there, or into --to",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if in.Site == "" {
				return fmt.Errorf("--site is required: the site whose repository holds the restore point")
			}
			cc, err := c.open(in.Plan, in.Site)
			if err != nil {
				return err
			}
			defer cc.Close()
			if in.To != "" && !filepath.IsAbs(in.To) {
				return fmt.Errorf("--to %q: give an absolute path; it is a path on the site's worker host, not here", in.To)
			}
			if at != "" {
				t, err := parseAt(at)
				if err != nil {
					return err
				}
				in.At = t
			}
			var res workflows.RestoreResult
			return c.start(cc, workflows.OpRestore, in.Plan, in.Site, workflows.Restore, in, &res, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "restore point\t%s (taken %s)\n", res.Point, res.Snapshot.Format(time.RFC3339))
				fmt.Fprintf(tw, "restored into\t%s at site %s\n", res.Target, res.Site)
				fmt.Fprintf(tw, "entries\t%d (%d files, %s)\n", res.Entries, res.Files, bytesText(res.Bytes))
				fmt.Fprintf(tw, "written\t%s from %d verified chunks (%d, %s, already in the target)\n", bytesText(res.BytesWritten), res.Chunks, res.ChunksLocal, bytesText(res.BytesLocal))
				if !res.RecoveredTo.IsZero() {
					fmt.Fprintf(tw, "recovered to\t%s (last transaction replayed)\n", res.RecoveredTo.Format(time.RFC3339Nano))
				}
				fmt.Fprintf(tw, "duration\t%s\n", res.Duration.D().Round(time.Millisecond))
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Site, "site", "", "site whose repository holds the point (default: the standby, the site not active)")
	cmd.Flags().StringVar(&at, "at", "", "postgres: recover to this time (RFC 3339, e.g. 2026-11-30T22:15:00Z), from the newest base backup that ended before it")
	cmd.Flags().StringVar(&in.Point, "point", "", "restore point id (default: the latest at --site)")
	cmd.Flags().StringVar(&in.To, "to", "", "absolute path to restore into (default: the plan's source at --site)")
	cmd.Flags().BoolVar(&in.KeepSetuid, "setuid", false, "recreate setuid/setgid bits even from a repository without a key (whose content is not authenticated)")
	cmd.Flags().BoolVar(&in.Force, "force", false, "overwrite the plan's own data at a site that takes writes (the active site, or read-write access resources)")
	c.waitFlags(cmd)
	return cmd
}

func (c *cli) pointsCmd() *cobra.Command {
	var in workflows.PointsInput
	cmd := &cobra.Command{
		Use:   "points --plan P --site S",
		Short: "List the valid restore points of a plan at a site",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, err := c.open(in.Plan, in.Site)
			if err != nil {
				return err
			}
			defer cc.Close()
			c.wait = true
			var res workflows.PointsResult
			return c.start(cc, workflows.OpPoints, in.Plan, in.Site, workflows.Points, in, &res, func(w io.Writer) {
				fmt.Fprintf(w, "%s at %s (%s, epoch %d)\n", res.Plan, res.Site, res.Repository, res.Epoch)
				if len(res.Points) == 0 {
					fmt.Fprintln(w, "no restore points")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "POINT\tSNAPSHOT\tAGE\t")
				for _, p := range res.Points {
					pin := ""
					if p.Pinned {
						pin = "pinned"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.Point, p.Snapshot.Local().Format(time.DateTime), time.Since(p.Snapshot).Round(time.Second), pin)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Site, "site", "", "site (default: the active site)")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the list as one JSON object")
	cmd.AddCommand(c.pinCmd(false), c.pinCmd(true))
	return cmd
}

// parseAt reads restore --at: RFC 3339, with or without fractional seconds.
func parseAt(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--at %q: give a time in RFC 3339 form with its zone, such as 2026-11-30T22:15:00Z or 2026-11-30T23:15:00+01:00", s)
	}
	return t, nil
}
