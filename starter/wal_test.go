package main

import (
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/workflows"
)

func TestStatusRPOCountsTheShippedWAL(t *testing.T) {
	now := time.Now()
	res := workflows.StatusResult{Plan: "db", RPO: workflows.Duration(21 * time.Second)}
	var b strings.Builder
	printStatus(&b, res)
	if !strings.Contains(oneSpace(b.String()), "RPO now 21s\n") {
		t.Fatalf("without WAL shipping:\n%s", b.String())
	}

	res.WAL = &workflows.WALStatus{Plan: "db", Standbys: []workflows.WALStandby{
		{Site: "secondary", Checked: now, Lag: workflows.Duration(2 * time.Second)},
		{Site: "remote", Checked: now, Lag: workflows.Duration(4 * time.Second)},
	}}
	b.Reset()
	printStatus(&b, res)
	if !strings.Contains(oneSpace(b.String()), "RPO now 21s to the newest point; 4s with the shipped WAL\n") {
		t.Fatalf("with WAL shipping:\n%s", b.String())
	}

	// A standby not measured, or in error, leaves the WAL out.
	res.WAL.Standbys[1].Error = "store down"
	b.Reset()
	printStatus(&b, res)
	if strings.Contains(b.String(), "shipped WAL\n") {
		t.Fatalf("with a standby in error:\n%s", b.String())
	}
}

// oneSpace collapses the runs of spaces a tabwriter pads columns with.
func oneSpace(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}
