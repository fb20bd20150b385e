package main

import (
	"fmt"
	"io"
	"time"

	"github.com/drorch/drorch/workflows"
)

// printForgetWAL prints what WAL retention kept and deleted (or, in a dry
// run, would delete), when the repository holds WAL.
func printForgetWAL(w io.Writer, res *workflows.ForgetResult) {
	wal := res.WAL
	if wal == nil {
		return
	}
	fmt.Fprintf(w, "WAL: %d files stored (%s)", wal.Files, bytesText(wal.Bytes))
	if wal.KeptFrom != "" {
		fmt.Fprintf(w, ", kept from %s (start of the oldest kept base backup, %s)\n", wal.KeptFrom, wal.KeptFromPoint)
	} else {
		fmt.Fprintln(w, ", all kept: no base backup is stored")
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	if wal.Deleted > 0 {
		fmt.Fprintf(w, "WAL: %s %d files (%s), %s … %s\n", verb, wal.Deleted, bytesText(wal.Freed), wal.First, wal.Last)
	} else {
		fmt.Fprintf(w, "WAL: %s none\n", verb)
	}
	if wal.Young > 0 {
		fmt.Fprintf(w, "WAL: %d files (%s) no base backup needs are kept until they are %s old\n",
			wal.Young, bytesText(wal.YoungBytes), time.Duration(wal.MarginSeconds*float64(time.Second)))
	}
	if wal.NoSweep != "" {
		fmt.Fprintf(w, "WAL: nothing deleted this time: %s\n", wal.NoSweep)
	}
}
