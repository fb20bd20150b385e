package activities

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A long activity heartbeats while it makes progress and stops once
// nothing has moved for StallTimeout, so that Temporal's heartbeat timeout
// ends a hung attempt instead of it looking alive forever.
func TestReporterHeartbeatsOnlyWhileProgressMoves(t *testing.T) {
	for name, moving := range map[string]bool{"moving": true, "stalled": false} {
		t.Run(name, func(t *testing.T) {
			var beats, late atomic.Int64
			start := time.Now()
			a := &Activities{log: zerolog.Nop(), HeartbeatInterval: 20 * time.Millisecond, StallTimeout: 200 * time.Millisecond,
				recordHeartbeat: func(context.Context, any) {
					beats.Add(1)
					if time.Since(start) > 500*time.Millisecond {
						late.Add(1)
					}
				}}
			rep := a.startReporter(context.Background(), "upload")
			for i := range 40 {
				if moving {
					rep.Update(func(p *Progress) { p.BytesDone = int64(i) })
				}
				time.Sleep(25 * time.Millisecond)
			}
			close(rep.halt)
			<-rep.done
			if stalled := rep.work.Err() != nil; stalled == moving {
				t.Fatalf("moving %v: the work's context cancelled: %v", moving, stalled)
			}
			if beats.Load() == 0 {
				t.Fatal("no heartbeat at all")
			}
			if moving && late.Load() == 0 {
				t.Fatalf("a moving transfer stopped heartbeating (%d beats)", beats.Load())
			}
			if !moving && late.Load() > 0 {
				t.Fatalf("a stalled transfer still heartbeats %d times after its stall timeout", late.Load())
			}
		})
	}
}
