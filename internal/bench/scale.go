package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/drorch/drorch/workflows"
)

// scalePlans back the data set up into fresh repositories, with one worker
// and then with two: the scale-out row (docs/scaleout.md). Their sources
// are the main plan's.
var scalePlans = [2]string{"bench-1-worker", "bench-2-workers"}

// scaleConfig is the YAML of the scale-out plans, with the main plan's
// source directories.
func scaleConfig(primary, secondary string) string {
	var b strings.Builder
	for _, p := range scalePlans {
		fmt.Fprintf(&b, "  %s:\n    primary: primary\n    secondary: secondary\n    source:\n      primary: {driver: dir, path: %s}\n      secondary: {driver: dir, path: %s}\n    encryption: {key: env:BENCH_KEY}\n",
			p, primary, secondary)
	}
	return b.String()
}

// workersRow backs the data set up with the one worker the bench runs, then
// again into a fresh repository with a second worker process on the same
// queue, and returns both times. The second worker is stopped before it
// returns, so the rows after it see one worker.
func (e *env) workersRow(ctx context.Context) (one, two time.Duration, err error) {
	backup := func(p string) (time.Duration, error) {
		var res workflows.BackupResult
		return e.execute(ctx, "full backup of "+p, workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: p}, &res)
	}
	if one, err = backup(scalePlans[0]); err != nil {
		return 0, 0, err
	}
	logf("starting a second worker on %s…", e.queue)
	w2 := exec.Command(e.bin, "--config", e.cfgPath, "--site", "primary", "--site", "secondary", "--workflows=false",
		"--task-queue", e.queue, "--address", e.temporal.Address, "--namespace", e.temporal.Namespace)
	w2.Env = e.workerEnv
	log, err := os.Create(e.workLog + ".2")
	if err != nil {
		return 0, 0, err
	}
	defer log.Close()
	w2.Stdout, w2.Stderr = log, log
	w2.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := w2.Start(); err != nil {
		return 0, 0, fmt.Errorf("start a second drorch-worker: %w", err)
	}
	defer func() { _ = w2.Process.Signal(syscall.SIGTERM); _ = w2.Wait() }()
	time.Sleep(2 * time.Second) // its pollers reach the server
	two, err = backup(scalePlans[1])
	return one, two, err
}
