package main

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/workflows"
)

// The tree rows (issue 10): a tree of many small files, where what a file
// costs matters more than what a byte does, and a tree of many entries,
// where what the worker holds per entry decides whether it fits in memory.
const (
	treePlan    = "bench-tree"    // the DRORCH_BENCH_TREE files
	entriesPlan = "bench-entries" // the DRORCH_BENCH_ENTRIES entries
)

// benchCount reads the count in the environment variable name: def when
// unset, 0 to skip.
func benchCount(name string, def int) (int, error) {
	s := os.Getenv(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a number of files, 0 to skip", name, s)
	}
	return n, nil
}

// writeTree writes n files into dir, 1000 to a directory, 1000 directories
// to a parent, the i-th of size(i, rng) random bytes, 8 writers at a time.
func writeTree(dir string, n int, size func(i int, rng *rand.Rand) int) error {
	var g errgroup.Group
	const writers = 8
	for w := range writers {
		g.Go(func() error {
			var seed [32]byte
			_, _ = crand.Read(seed[:])
			data := rand.NewChaCha8(seed)
			rng := rand.New(data)
			buf := make([]byte, 64<<10)
			for d := w; d*1000 < n; d += writers {
				sub := filepath.Join(dir, fmt.Sprintf("%03d/%03d", d/1000, d%1000))
				if err := os.MkdirAll(sub, 0o755); err != nil {
					return err
				}
				for i := d * 1000; i < min(n, (d+1)*1000); i++ {
					b := buf[:min(size(i, rng), len(buf))]
					_, _ = data.Read(b)
					if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("%07d", i)), b, 0o644); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// treeRows writes DRORCH_BENCH_TREE files of 0–4 KiB (2 KiB on average)
// into src, and times a full backup, a no-change backup and a restore of
// them by drorch (plan treePlan, restored at the secondary) and restic.
func (e *env) treeRows(ctx context.Context, a *anchors, src string, n int) ([]sideBySide, error) {
	label := fmt.Sprintf("%d-file tree", n)
	logf("writing %d files of 0–4 KiB…", n)
	if err := writeTree(src, n, func(_ int, rng *rand.Rand) int { return rng.IntN(4097) }); err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	rows := []sideBySide{{name: label + ": full backup"}, {name: label + ": no-change backup"}, {name: label + ": restore"}}
	for i := range rows {
		rows[i].restic, rows[i].clone = notInstalled, notMeasured
	}
	for i, what := range []string{"full backup", "no-change backup"} {
		d, err := e.execute(ctx, label+": "+what, workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: treePlan}, &workflows.BackupResult{})
		if err != nil {
			return nil, err
		}
		rows[i].drorch = measured{d: d}
	}
	if err := e.transmitOf(ctx, label, treePlan); err != nil {
		return nil, err
	}
	d, err := e.execute(ctx, label+": restore at the secondary", workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: treePlan, Site: "secondary"}, &workflows.RestoreResult{})
	if err != nil {
		return nil, err
	}
	rows[2].drorch = measured{d: d}
	if a.hasRestic {
		if err := a.resticInit("restic-tree"); err != nil {
			return nil, err
		}
	}
	for i, what := range []string{"full backup", "no-change backup"} {
		if rows[i].restic, err = a.resticBackup(label+": "+what, "restic-tree", src); err != nil {
			return nil, err
		}
	}
	if rows[2].restic, err = a.resticRestore("restic-tree"); err != nil {
		return nil, err
	}
	return rows, nil
}

// transmitOf sends plan's latest point to the secondary, untimed.
func (e *env) transmitOf(ctx context.Context, label, plan string) error {
	_, err := e.execute(ctx, label+": transmit", workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan, From: "primary", To: "secondary"}, &workflows.TransmitResult{})
	return err
}

// entriesRows writes n entries into src, sparsely so that ten million fit a
// small disk (empty files, one in a hundred holding 1 KiB), and measures the
// worker's peak RSS over a backup, a transmit, a check at the secondary and
// a restore there, each in a worker started for it. The
// source tree is removed before the restore: ten million files twice do
// not fit the inodes of a 256 GB disk, and the restore reads only the
// repository.
func (e *env) entriesRows(ctx context.Context, src string, n int) ([]sideBySide, error) {
	label := fmt.Sprintf("%d entries", n)
	logf("writing %d files, one in a hundred of 1 KiB…", n)
	began := time.Now()
	if err := writeTree(src, n, func(i int, _ *rand.Rand) int {
		if i%100 == 0 {
			return 1024
		}
		return 0
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	logf("%s written in %s", label, dur(time.Since(began)))
	steps := []struct {
		what   string
		op     string
		wf, in any
		before func() error
	}{
		{what: "backup", op: workflows.OpBackup, wf: workflows.Backup, in: workflows.BackupInput{Plan: entriesPlan}},
		{what: "transmit", op: workflows.OpTransmit, wf: workflows.Transmit, in: workflows.TransmitInput{Plan: entriesPlan, From: "primary", To: "secondary"}},
		{what: "check at the secondary", op: workflows.OpCheck, wf: workflows.Check, in: workflows.CheckInput{Plan: entriesPlan, Site: "secondary"}},
		{what: "restore at the secondary", op: workflows.OpRestore, wf: workflows.Restore, in: workflows.RestoreInput{Plan: entriesPlan, Site: "secondary"},
			before: func() error {
				logf("removing the source tree (%s) to make room for the restored one…", label)
				began := time.Now()
				if err := removeTree(src); err != nil {
					return fmt.Errorf("remove the source tree of %s: %w", label, err)
				}
				logf("removed in %s", dur(time.Since(began)))
				return nil
			}},
	}
	var rows []sideBySide
	for i, s := range steps {
		if s.before != nil {
			if err := s.before(); err != nil {
				return nil, err
			}
		}
		// Each step in a fresh worker: the runtime returns freed memory
		// to the system slowly, and a reset peak (clear_refs) would
		// still count what the step before kept.
		if err := e.restartWorker(filepath.Join(filepath.Dir(e.workLog), fmt.Sprintf("worker-entries-%d.log", i))); err != nil {
			return nil, err
		}
		pid := e.worker.Process.Pid
		syscall.Sync()
		start, err := vmStatus(pid, "VmRSS")
		if err != nil {
			return nil, err
		}
		d, err := e.execute(ctx, label+": "+s.what, s.op, s.wf, s.in, new(any))
		row := sideBySide{name: fmt.Sprintf("%s: %s, worker peak RSS (< 512 MiB)", label, s.what), restic: notMeasured, clone: notMeasured}
		if err != nil {
			// Printed, not fatal: the row shows where the worker gives out.
			logf("%s: %s failed: %v", label, s.what, err)
			row.drorch = measured{none: "failed: see the log"}
			rows = append(rows, row)
			break
		}
		hwm, err := vmHWM(pid)
		if err != nil {
			return nil, err
		}
		logf("%s: %s: worker peak RSS %s (%s at the start)", label, s.what, human(hwm), human(start))
		row.drorch = measured{none: fmt.Sprintf("%s in %s (%s at the start)", human(hwm), dur(d), human(start))}
		rows = append(rows, row)
	}
	return rows, nil
}

// removeTree removes dir's contents, the directories writeTree made
// removed 8 at a time: one rm of ten million files takes long on one core.
func removeTree(dir string) error {
	tops, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var g errgroup.Group
	g.SetLimit(8)
	for _, top := range tops {
		subs, err := os.ReadDir(filepath.Join(dir, top.Name()))
		if err != nil {
			return err
		}
		for _, sub := range subs {
			g.Go(func() error { return os.RemoveAll(filepath.Join(dir, top.Name(), sub.Name())) })
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, top := range tops {
		if err := os.RemoveAll(filepath.Join(dir, top.Name())); err != nil {
			return err
		}
	}
	return nil
}
