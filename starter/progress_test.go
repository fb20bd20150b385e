package main

import (
	"testing"
	"time"

	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/sdk/converter"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/workflows"
)

func pendingWith(t *testing.T, p activities.Progress) *workflowpb.PendingActivityInfo {
	t.Helper()
	d, err := converter.GetDefaultDataConverter().ToPayloads(struct {
		Resume   any                 `json:"resume"`
		Progress activities.Progress `json:"progress"`
	}{Progress: p})
	if err != nil {
		t.Fatal(err)
	}
	return &workflowpb.PendingActivityInfo{HeartbeatDetails: d}
}

// Two ranges of one upload run on two workers and a third has finished:
// the line shows their sum against the snapshot's total.
func TestFoldLiveSumsTheRangesOfAStep(t *testing.T) {
	now := time.Now()
	p := workflows.Progress{Step: "upload", Done: &activities.Progress{Step: "upload", BytesDone: 100, ChunksDone: 1, ChunksNew: 1, BytesNew: 100}}
	pending := []*workflowpb.PendingActivityInfo{
		pendingWith(t, activities.Progress{Step: "upload", BytesTotal: 1000, BytesDone: 200, ChunksDone: 2, Updated: now}),
		pendingWith(t, activities.Progress{Step: "upload", BytesTotal: 1000, BytesDone: 300, ChunksDone: 3, ChunksNew: 3, BytesNew: 300, Updated: now.Add(time.Second)}),
		{}, // a range not started yet
	}
	foldLive(&p, pending)
	if p.Live == nil {
		t.Fatal("no live progress")
	}
	got := *p.Live
	if got.BytesDone != 600 || got.BytesTotal != 1000 || got.ChunksDone != 6 || got.ChunksNew != 4 || got.BytesNew != 400 {
		t.Fatalf("live = %+v, want bytes 600/1000, chunks 6 (new 4, 400 B)", got)
	}
	if !got.Updated.Equal(now.Add(time.Second)) {
		t.Fatalf("updated = %v, want the newest heartbeat's", got.Updated)
	}
}

// One activity, as before parallel steps: its heartbeat is the line; a
// finished range of an earlier step is not added.
func TestFoldLiveOneActivity(t *testing.T) {
	p := workflows.Progress{Step: "commit", Done: &activities.Progress{Step: "upload", BytesDone: 100}}
	foldLive(&p, []*workflowpb.PendingActivityInfo{pendingWith(t, activities.Progress{Step: "copy", BytesDone: 7, Updated: time.Now()})})
	if p.Live == nil || p.Live.BytesDone != 7 || p.Live.Step != "copy" {
		t.Fatalf("live = %+v, want the one heartbeat", p.Live)
	}
	p = workflows.Progress{Step: "commit", Done: &activities.Progress{Step: "upload", BytesDone: 100}}
	foldLive(&p, nil)
	if p.Live != nil {
		t.Fatalf("live = %+v, want none: the step that had ranges is over", p.Live)
	}
}
