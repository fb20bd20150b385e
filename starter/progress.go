package main

import (
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/converter"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/workflows"
)

// foldLive sets p.Live from the heartbeats of the run's pending
// activities. A step that runs as several activities (a parallel upload or
// copy) shows their sum, plus the parts that already finished (p.Done);
// the totals are the whole step's in each part, so the largest is taken.
func foldLive(p *workflows.Progress, pending []*workflowpb.PendingActivityInfo) {
	var parts []activities.Progress
	for _, pa := range pending {
		if pa.GetHeartbeatDetails() == nil {
			continue
		}
		var hb struct {
			Progress activities.Progress `json:"progress"`
		}
		if converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &hb) == nil && !hb.Progress.Updated.IsZero() {
			parts = append(parts, hb.Progress)
		}
	}
	newest := -1
	for i, hb := range parts {
		if newest < 0 || hb.Updated.After(parts[newest].Updated) {
			newest = i
		}
	}
	if p.Live != nil && (newest < 0 || !parts[newest].Updated.After(p.Live.Updated)) {
		return // the workflow's own is the newest
	}
	// The newest heartbeat names the step; a part of another step (a
	// leftover of an earlier one) is not added to it.
	var live activities.Progress
	switch {
	case newest >= 0:
		live.Step = parts[newest].Step
	case p.Done != nil && p.Done.Step == p.Step:
		live.Step = p.Done.Step
	default:
		return
	}
	for _, hb := range parts {
		if hb.Step == live.Step {
			addProgress(&live, hb)
		}
	}
	if d := p.Done; d != nil && d.Step == live.Step && d.Step == p.Step {
		addProgress(&live, *d)
	}
	p.Live = &live
}

// addProgress adds b's counters to a; totals and times take the widest.
func addProgress(a *activities.Progress, b activities.Progress) {
	a.FilesTotal = max(a.FilesTotal, b.FilesTotal)
	a.BytesTotal = max(a.BytesTotal, b.BytesTotal)
	a.FilesDone += b.FilesDone
	a.BytesDone += b.BytesDone
	a.BytesNew += b.BytesNew
	a.ChunksTotal += b.ChunksTotal
	a.ChunksDone += b.ChunksDone
	a.ChunksNew += b.ChunksNew
	a.Scanned += b.Scanned
	if a.Started.IsZero() || (!b.Started.IsZero() && b.Started.Before(a.Started)) {
		a.Started = b.Started
	}
	if b.Updated.After(a.Updated) {
		a.Updated = b.Updated
	}
}
