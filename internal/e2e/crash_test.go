package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/workflows"
)

// crashData is large enough that a backup spans several pieces and a
// transmit takes seconds, so a kill lands in the middle.
var crashData = treeSpec{seed: 7, dataBytes: 600 << 20, files: 60}

// requireUntouched fails if any chunk present before a crash was written
// again afterwards: a resumed step must not redo finished work.
func requireUntouched(t *testing.T, before, after map[string]time.Time) {
	t.Helper()
	rewritten := 0
	for key, mod := range before {
		got, ok := after[key]
		if !ok {
			t.Errorf("chunk %s vanished", key)
			continue
		}
		if !got.Equal(mod) {
			rewritten++
		}
	}
	if rewritten > 0 {
		t.Fatalf("%d of the %d chunks uploaded before the crash were uploaded again", rewritten, len(before))
	}
}

func TestWorkerKilledDuringBackup(t *testing.T) {
	// One range at a time (parallel: 1), so a range spans several pieces
	// and is killed between them: its retry resumes from the heartbeat.
	// scaleout_test.go kills one of two workers running ranges side by side.
	s := newStack(t, stackOptions{encrypt: true, planExtra: func(*stack) string { return "    parallel: 1\n" }})
	src := s.source("primary")
	genTree(t, src, crashData)
	w := s.spawnWorker()
	run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})

	// Kill the worker once the server holds a heartbeat naming a finished
	// piece as the resume point, and more is under way.
	waitFor(t, "a heartbeat with a resume point", 5*time.Minute, func() bool { return s.resumePoint(run) >= 1 })
	w.kill()
	time.Sleep(time.Second)
	before := s.chunkObjects("primary")
	t.Logf("killed the worker with %d chunks uploaded", len(before))

	w2 := s.spawnWorker()
	var res workflows.BackupResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("backup after the worker was killed: %v\n%s", err, s.logs.Tail(3000))
	}
	if !strings.Contains(string(w2.log.Bytes()), "resuming upload") {
		t.Errorf("the restarted worker did not resume the upload from its heartbeat")
	}
	after := s.chunkObjects("primary")
	requireUntouched(t, before, after)
	if int64(len(after)) < res.Chunks-res.ChunksNew {
		t.Fatalf("repository holds %d chunks, fewer than the point needs", len(after))
	}

	restored := filepath.Join(s.dir, "restored")
	s.restore("primary", restored)
	requireSameTree(t, src, restored)
}

func TestWorkerKilledDuringTransmit(t *testing.T) {
	s := newStack(t, stackOptions{})
	src := s.source("primary")
	genTree(t, src, crashData)
	w := s.spawnWorker()
	b := s.backup()
	run := s.start(workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan})

	waitFor(t, "a third of the chunks at the secondary", 5*time.Minute, func() bool {
		return int64(len(s.chunkObjects("secondary")))*3 >= b.Chunks
	})
	w.kill()
	time.Sleep(time.Second)
	before := s.chunkObjects("secondary")
	t.Logf("killed the worker with %d of %d chunks at the secondary", len(before), b.ChunksNew)

	s.spawnWorker()
	var res workflows.TransmitResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("transmit after the worker was killed: %v\n%s", err, s.logs.Tail(3000))
	}
	requireUntouched(t, before, s.chunkObjects("secondary"))
	// The copy runs as ranges (parallel-copy): those finished before the
	// kill count what they copied, the retried ones what they found
	// missing; no chunk is counted twice. requireUntouched proves none
	// was sent again.
	if res.ChunksCopied > res.Chunks {
		t.Fatalf("the resumed transmit copied %d chunks; the point has only %d", res.ChunksCopied, res.Chunks)
	}
	s.restore("secondary", "")
	requireSameTree(t, src, s.source("secondary"))
}

func TestDestinationRestartedDuringTransmit(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	src := s.source("primary")
	genTree(t, src, crashData)
	s.startWorker()
	b := s.backup()
	run := s.start(workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan})

	waitFor(t, "a third of the chunks at the secondary", 5*time.Minute, func() bool {
		return int64(len(s.chunkObjects("secondary")))*3 >= b.Chunks
	})
	dest := s.minio["secondary"]
	dest.Stop(t)
	time.Sleep(2 * time.Second)
	dest.Start(t)
	before := s.chunkObjects("secondary")
	t.Logf("restarted the destination with %d of %d chunks there", len(before), b.Chunks)

	var res workflows.TransmitResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("transmit across a destination restart: %v\n%s", err, s.logs.Tail(3000))
	}
	requireUntouched(t, before, s.chunkObjects("secondary"))
	if !strings.Contains(string(s.logs.Bytes()), "CopyChunks") && res.ChunksCopied == 0 {
		t.Fatalf("nothing was copied after the restart: %+v", res)
	}
	s.restore("secondary", "")
	requireSameTree(t, src, s.source("secondary"))
}
