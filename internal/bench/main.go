// Command bench measures drorch's data path on real servers and prints three
// tables: full, unchanged and 1%-changed backups against plain uploads to the
// same MinIO, a full backup with one worker and with two, transmit, restore
// and the worker's peak memory; the same rows
// and a small-file backup beside restic and rclone, when installed, on the
// same data and MinIO (anchors.go); then the postgres source against
// pgBackRest on one pgbench cluster (full and incremental backup, restore
// with WAL replay) and WAL shipping lag (pg.go).
//
//	go tool task bench                           # 1 GiB, 20,000 small files, pgbench scale 70
//	DRORCH_BENCH_SIZE=256MiB DRORCH_BENCH_SMALL=2000 DRORCH_BENCH_PG_SCALE=10 go run ./internal/bench
//	DRORCH_BENCH_PG=0 go run ./internal/bench    # without the PostgreSQL rows
//	DRORCH_BENCH_TREE=0                          # without the 1,000,000-file tree
//	DRORCH_BENCH_ENTRIES=10000000                # with the worker's memory over 10 million entries
//	DRORCH_BENCH_ONLY=entries DRORCH_BENCH_ENTRIES=10000000  # that table alone
//	DRORCH_BENCH_ONLY=tree                       # the tree rows alone
//
// It starts its own Temporal dev server and two MinIO servers on free loopback
// ports and runs the drorch-worker binary, all in a temporary directory that
// is removed at exit. A missed target is printed, not an error: the command
// fails only when something does not work.
package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	enums "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

const (
	plan      = "bench"
	smallPlan = "bench-small" // the DRORCH_BENCH_SMALL files, in a repository of their own
)

// The worker is started with Pdeathsig, which fires when the thread that
// forked it exits. Keeping main on the main thread, which lives as long as the
// process, makes that mean "when the bench exits".
func init() { runtime.LockOSThread() }

// cleanups stop what the bench started, in reverse order, once: at the end of
// main or on a signal, whichever comes first.
var cleanups struct {
	sync.Mutex
	fs []func()
}

func atExit(f func()) {
	cleanups.Lock()
	defer cleanups.Unlock()
	cleanups.fs = append(cleanups.fs, f)
}

func cleanup() {
	cleanups.Lock() // never unlocked: nothing starts after this
	for i := len(cleanups.fs) - 1; i >= 0; i-- {
		cleanups.fs[i]()
	}
	cleanups.fs = nil
}

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		logf("%s: stopping the servers", s)
		cleanup()
		os.Exit(130)
	}()
	err := run()
	cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// env is the running set-up: servers, worker and clients.
type env struct {
	temporal *testenv.Temporal
	minio    map[string]*testenv.MinIO
	worker   *exec.Cmd
	workLog  string
	profiled int // CPU profiles taken (DRORCH_BENCH_PPROF)
	tc       client.Client
	queue    string
	// The worker's binary, config and environment, for a second worker
	// (scale.go).
	bin, cfgPath string
	workerEnv    []string
}

func run() error {
	size := giB
	if s := os.Getenv("DRORCH_BENCH_SIZE"); s != "" {
		var err error
		if size, err = parseSize(s); err != nil {
			return fmt.Errorf("DRORCH_BENCH_SIZE: %w", err)
		}
	}
	nSmall, err := smallCount()
	if err != nil {
		return err
	}
	nTree, err := benchCount("DRORCH_BENCH_TREE", 1_000_000)
	if err != nil {
		return err
	}
	nEntries, err := benchCount("DRORCH_BENCH_ENTRIES", 0)
	if err != nil {
		return err
	}
	only := os.Getenv("DRORCH_BENCH_ONLY")
	switch {
	case only != "" && only != "entries" && only != "tree":
		return fmt.Errorf("DRORCH_BENCH_ONLY=%q: want entries or tree", only)
	case only == "entries" && nEntries == 0:
		return fmt.Errorf("DRORCH_BENCH_ONLY=entries needs DRORCH_BENCH_ENTRIES, the number of entries")
	case only == "tree" && nTree == 0:
		return fmt.Errorf("DRORCH_BENCH_ONLY=tree needs DRORCH_BENCH_TREE above 0")
	}
	dir, err := os.MkdirTemp("", "drorch-bench-")
	if err != nil {
		return err
	}
	atExit(func() { os.RemoveAll(dir) })
	e, err := setup(dir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	switch only {
	case "entries":
		rows, err := e.entriesRows(ctx, filepath.Join(dir, "source", "entries-primary"), nEntries)
		if err != nil {
			return err
		}
		return printSideBySide(os.Stdout, fmt.Sprintf("the worker's peak RSS over %d entries, %d CPUs, encryption on", nEntries, runtime.NumCPU()), rows)
	case "tree":
		an := newAnchors(filepath.Join(dir, "anchors"), e.minio)
		rows, err := e.treeRows(ctx, an, filepath.Join(dir, "source", "tree-primary"), nTree)
		if err != nil {
			return err
		}
		hwm, err := vmHWM(e.worker.Process.Pid)
		if err != nil {
			return err
		}
		rows = append(rows, sideBySide{"peak RSS (drorch: the worker's, of the whole run)", measured{none: human(hwm)}, notMeasured, notMeasured})
		return printSideBySide(os.Stdout, fmt.Sprintf("a %d-file tree, %d CPUs, encryption on; %s", nTree, runtime.NumCPU(), toolVersion("restic", an.hasRestic)), rows)
	}

	logf("generating %s…", human(size))
	ds, err := generate(filepath.Join(dir, "source", "primary"), size)
	if err != nil {
		return fmt.Errorf("generate data: %w", err)
	}
	logf("%d files (%d large)", len(ds.files), ds.large)

	logf("baseline: plain PutObject of every file, 8 in parallel…")
	syscall.Sync()
	mc, err := minioClient(e.minio["primary"])
	if err != nil {
		return err
	}
	baseDur, err := baseline(ctx, mc, "baseline", ds)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	logf("baseline: %s", dur(baseDur))
	an := newAnchors(filepath.Join(dir, "anchors"), e.minio)
	rcloneCopy, err := an.rclone("copy of the data set", "copy", ds.dir, "primary:rclone")
	if err != nil {
		return err
	}

	backup := func(what string, res *workflows.BackupResult) (time.Duration, error) {
		return e.execute(ctx, what, workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, res)
	}
	var full, same, delta workflows.BackupResult
	fullDur, err := backup("full backup", &full)
	if err != nil {
		return err
	}
	sameDur, err := backup("no-change backup", &same)
	if err != nil {
		return err
	}
	if an.hasRestic {
		if err := an.resticInit("restic"); err != nil {
			return err
		}
	}
	resticFull, err := an.resticBackup("full backup", "restic", ds.dir)
	if err != nil {
		return err
	}
	resticSame, err := an.resticBackup("no-change backup", "restic", ds.dir)
	if err != nil {
		return err
	}
	changed, err := ds.change()
	if err != nil {
		return err
	}
	deltaDur, err := backup("1%-change backup", &delta)
	if err != nil {
		return err
	}
	var tr workflows.TransmitResult
	trDur, err := e.execute(ctx, "transmit primary → secondary", workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan, From: "primary", To: "secondary"}, &tr)
	if err != nil {
		return err
	}
	rcloneSync, err := an.rclone("sync primary → secondary", "sync", "primary:rclone", "secondary:rclone")
	if err != nil {
		return err
	}
	var rs workflows.RestoreResult
	rsDur, err := e.execute(ctx, "restore at the secondary", workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, &rs)
	if err != nil {
		return err
	}
	// The same point again over the restored tree: what a failback round
	// or a warm-standby refresh costs when little changed.
	var again workflows.RestoreResult
	againDur, err := e.execute(ctx, "restore again at the secondary", workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, &again)
	if err != nil {
		return err
	}
	resticRestore, err := an.resticRestore("restic")
	if err != nil {
		return err
	}
	sides := []sideBySide{
		{"full backup (rclone: copy)", measured{d: fullDur}, resticFull, rcloneCopy},
		{"no-change backup", measured{d: sameDur}, resticSame, notMeasured},
		{"restore (restic: the point before the 1% change)", measured{d: rsDur}, resticRestore, notMeasured},
		{"transmit (rclone: sync MinIO → MinIO)", measured{d: trDur}, notMeasured, rcloneSync},
	}
	if nSmall > 0 {
		small, err := e.smallRow(ctx, an, ds, filepath.Join(dir, "source", "small-primary"), nSmall)
		if err != nil {
			return err
		}
		sides = append(sides, small)
	}
	hwm, err := vmHWM(e.worker.Process.Pid)
	if err != nil {
		return err
	}
	oneWorker, twoWorkers, err := e.workersRow(ctx)
	if err != nil {
		return err
	}
	if nTree > 0 {
		rows, err := e.treeRows(ctx, an, filepath.Join(dir, "source", "tree-primary"), nTree)
		if err != nil {
			return err
		}
		sides = append(sides, rows...)
	}
	if nEntries > 0 {
		rows, err := e.entriesRows(ctx, filepath.Join(dir, "source", "entries-primary"), nEntries)
		if err != nil {
			return err
		}
		sides = append(sides, rows...)
	}

	fullRate, baseRate := rate(full.BytesRead, fullDur), rate(ds.bytes, baseDur)
	speedup := float64(fullDur) / float64(sameDur)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "drorch bench: %s in %d files (%d large), %d CPUs, encryption on\n\n", human(ds.bytes), len(ds.files), ds.large, runtime.NumCPU())
	fmt.Fprintln(w, "measure\tresult\ttarget\t")
	row := func(name, result, target string, ok ...bool) {
		status := ""
		if len(ok) > 0 {
			status = map[bool]string{true: "ok", false: "MISSED"}[ok[0]]
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", name, result, target, status)
	}
	row("full backup", fmt.Sprintf("%.1f MB/s  (%s, %d chunks, %s stored)", fullRate, dur(fullDur), full.ChunksNew, human(full.Uploaded)), "")
	row("baseline: PutObject ×8", fmt.Sprintf("%.1f MB/s  (%s)", baseRate, dur(baseDur)), "")
	row("full backup / baseline", fmt.Sprintf("%.2f×", fullRate/baseRate), "≥ 0.8×", fullRate/baseRate >= 0.8)
	row("full backup, 1 worker vs 2 workers", fmt.Sprintf("%.1f MB/s vs %.1f MB/s  (%s vs %s, %.2f×)", rate(ds.bytes, oneWorker), rate(ds.bytes, twoWorkers),
		dur(oneWorker), dur(twoWorkers), float64(oneWorker)/float64(twoWorkers)), "")
	row("no-change backup", fmt.Sprintf("%s, %d chunks uploaded", dur(sameDur), same.ChunksNew), "0 chunks", same.ChunksNew == 0)
	row("no-change speed-up vs full", fmt.Sprintf("%.1f×", speedup), "≥ 10×", speedup >= 10)
	row("1%-change backup", fmt.Sprintf("%s, %s overwritten: %s new, %s stored, %d chunks", dur(deltaDur), human(changed), human(delta.BytesNew), human(delta.Uploaded), delta.ChunksNew), "")
	row("transmit primary → secondary", fmt.Sprintf("%.1f MB/s  (%s, %d chunks, %s copied)", rate(tr.Bytes, trDur), dur(trDur), tr.ChunksCopied, human(tr.BytesCopied)), "")
	row("restore at secondary", fmt.Sprintf("%.1f MB/s  (%s, %d files)", rate(rs.Bytes, rsDur), dur(rsDur), rs.Files), "")
	row("restore again (target holds it)", fmt.Sprintf("%.1f MB/s  (%s, %d of %d chunks from the target)", rate(again.Bytes, againDur), dur(againDur), again.ChunksLocal, again.Chunks), "")
	row("worker peak memory (VmHWM)", human(hwm), "< 512 MiB", hwm < 512*miB)
	if err := w.Flush(); err != nil {
		return err
	}
	// The tree rows ran after the first table's peak was read: this one
	// covers them too (the entries rows reset it, and print their own).
	whole, err := vmHWM(e.worker.Process.Pid)
	if err != nil {
		return err
	}
	if nEntries > 0 {
		whole = hwm
	}
	sides = append(sides, sideBySide{"peak RSS (drorch: the worker's, of the whole run)", measured{none: human(max(hwm, whole))}, notMeasured, notMeasured})
	title := fmt.Sprintf("side by side on the same data and MinIO: %s, %s; speed ratios, ≥ 1× means drorch is faster",
		toolVersion("restic", an.hasRestic), toolVersion("rclone", an.hasRclone))
	if err := printSideBySide(os.Stdout, title, sides); err != nil {
		return err
	}
	if os.Getenv("DRORCH_BENCH_PG") == "0" {
		return nil
	}
	return pgRows(ctx, e, filepath.Join(dir, "drorch-worker"))
}

// setup starts the servers and the worker in dir and registers their stops.
func setup(dir string) (*env, error) {
	e := &env{minio: map[string]*testenv.MinIO{}, queue: "bench-" + randomHex(4)}
	for _, sub := range []string{"temporal", "minio-primary", "minio-secondary", "source/primary", "source/secondary", "source/small-primary", "source/small-secondary", "source/tree-primary", "source/tree-secondary", "source/entries-primary", "source/entries-secondary"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	logf("starting Temporal dev server and two MinIO servers…")
	var err error
	if e.temporal, err = testenv.StartTemporalServer(filepath.Join(dir, "temporal")); err != nil {
		return nil, err
	}
	atExit(e.temporal.Close)
	workerEnv := os.Environ()
	if profiles != "" {
		workerEnv = append(workerEnv, "DRORCH_CPUPROFILE_DIR="+profiles)
	}
	var cfg strings.Builder
	cfg.WriteString("sites:\n")
	for _, site := range []string{"primary", "secondary"} {
		m, err := testenv.StartMinIOServer(filepath.Join(dir, "minio-"+site))
		if err != nil {
			return nil, err
		}
		atExit(m.Close)
		e.minio[site] = m
		up := strings.ToUpper(site)
		workerEnv = append(workerEnv, "BENCH_"+up+"_ACCESS="+m.AccessKey, "BENCH_"+up+"_SECRET="+m.SecretKey)
		fmt.Fprintf(&cfg, "  %s:\n    store: {driver: s3, endpoint: %s, bucket: drorch, accessKey: env:BENCH_%s_ACCESS, secretKey: env:BENCH_%s_SECRET, insecure: true}\n",
			site, m.Endpoint, up, up)
	}
	fmt.Fprintf(&cfg, "plans:\n  %s:\n    primary: primary\n    secondary: secondary\n    source:\n", plan)
	for _, site := range []string{"primary", "secondary"} {
		fmt.Fprintf(&cfg, "      %s: {driver: dir, path: %s}\n", site, filepath.Join(dir, "source", site))
	}
	cfg.WriteString("    encryption: {key: env:BENCH_KEY}\n")
	for _, p := range []struct{ name, dir string }{{smallPlan, "small-"}, {treePlan, "tree-"}, {entriesPlan, "entries-"}} {
		fmt.Fprintf(&cfg, "  %s:\n    primary: primary\n    secondary: secondary\n    source:\n", p.name)
		for _, site := range []string{"primary", "secondary"} {
			fmt.Fprintf(&cfg, "      %s: {driver: dir, path: %s}\n", site, filepath.Join(dir, "source", p.dir+site))
		}
		cfg.WriteString("    encryption: {key: env:BENCH_KEY}\n")
	}
	cfg.WriteString(scaleConfig(filepath.Join(dir, "source", "primary"), filepath.Join(dir, "source", "secondary")))
	workerEnv = append(workerEnv, "BENCH_KEY="+randomHex(32))
	cfgPath := filepath.Join(dir, "drorch.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}

	logf("building drorch-worker…")
	bin := filepath.Join(dir, "drorch-worker")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/drorch/drorch/worker").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build drorch-worker: %w\n%s", err, out)
	}
	e.workLog = filepath.Join(dir, "worker.log")
	if e.worker, err = startWorker(bin, cfgPath, e.queue, e.temporal, workerEnv, e.workLog); err != nil {
		return nil, err
	}
	e.bin, e.cfgPath, e.workerEnv = bin, cfgPath, workerEnv

	if profiles != "" {
		meter = newCPUMeter(e.worker.Process.Pid, map[string]string{"primary": e.minio["primary"].Endpoint, "secondary": e.minio["secondary"].Endpoint})
	}
	e.tc, err = client.Dial(client.Options{
		HostPort:  e.temporal.Address,
		Namespace: e.temporal.Namespace,
		Logger:    tlog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
	if err != nil {
		return nil, fmt.Errorf("temporal client: %w", err)
	}
	atExit(e.tc.Close)
	return e, nil
}

// startWorker runs the drorch-worker binary for both sites on queue, its
// output in logPath, and registers its stop.
func startWorker(bin, cfgPath, queue string, t *testenv.Temporal, env []string, logPath string) (*exec.Cmd, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	w := exec.Command(bin, "--config", cfgPath, "--site", "primary", "--site", "secondary",
		"--task-queue", queue, "--address", t.Address, "--namespace", t.Namespace)
	w.Env = env
	w.Stdout, w.Stderr = logFile, logFile
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := w.Start(); err != nil {
		return nil, fmt.Errorf("start drorch-worker: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = w.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = syscall.Kill(-w.Process.Pid, syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-w.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		})
	}
	workerStops.Store(w.Process.Pid, stop)
	atExit(stop)
	return w, nil
}

// workerStops holds, by pid, what stops each worker startWorker started.
var workerStops sync.Map

// restartWorker stops e's worker and starts a fresh one in its place, its
// output in logPath: a step measured from a fresh process is not charged
// with the memory the runtime kept from the step before.
func (e *env) restartWorker(logPath string) error {
	if stop, ok := workerStops.Load(e.worker.Process.Pid); ok {
		stop.(func())()
	}
	w, err := startWorker(e.bin, e.cfgPath, e.queue, e.temporal, e.workerEnv, logPath)
	if err != nil {
		return err
	}
	e.worker, e.workLog = w, logPath
	return nil
}

// execute runs one workflow and returns its wall time, start to result. On
// failure the error carries the end of the worker's log.
func (e *env) execute(ctx context.Context, what, op string, wf, in, res any) (time.Duration, error) {
	logf("%s…", what)
	syscall.Sync() // the last step's writes are not this step's work
	stop := e.profile(what)
	defer stop()
	var cpu map[string]time.Duration
	if meter != nil {
		cpu = meter.snap()
	}
	start := time.Now()
	run, err := e.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    workflows.WorkflowID(plan, op, start) + "-" + randomHex(3),
		TaskQueue:             e.queue,
		TypedSearchAttributes: workflows.Attributes(plan, "", op),
	}, wf, in)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Hour)
		defer cancel()
		err = run.Get(ctx, res)
	}
	if err != nil {
		log, _ := os.ReadFile(e.workLog)
		return 0, fmt.Errorf("%s: %w\nworker log ends with:\n%s", what, err, log[max(0, len(log)-4000):])
	}
	d := time.Since(start)
	logf("%s: %s", what, dur(d))
	if meter != nil {
		logf("  %s", meter.since(cpu))
		e.logActivities(ctx, run.GetID(), run.GetRunID())
	}
	return d, nil
}

// logActivities logs, from the history of a finished workflow, when each
// of its activities was scheduled, how long it waited for a worker and how
// long it ran: where a step's wall time went besides the worker's CPU.
func (e *env) logActivities(ctx context.Context, id, runID string) {
	var first time.Time
	scheduled := map[int64]*history.HistoryEvent{}
	it := e.tc.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	started := map[int64]time.Time{}
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			logf("history of %s: %v", id, err)
			return
		}
		at := ev.GetEventTime().AsTime()
		if first.IsZero() {
			first = at
		}
		switch {
		case ev.GetActivityTaskScheduledEventAttributes() != nil:
			scheduled[ev.GetEventId()] = ev
		case ev.GetActivityTaskStartedEventAttributes() != nil:
			started[ev.GetActivityTaskStartedEventAttributes().GetScheduledEventId()] = at
		case ev.GetActivityTaskCompletedEventAttributes() != nil:
			sid := ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()
			if s := scheduled[sid]; s != nil {
				sAt := s.GetEventTime().AsTime()
				logf("  %-22s at %7s: waited %7s, ran %7s", s.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName(),
					dur(sAt.Sub(first)), dur(started[sid].Sub(sAt)), dur(at.Sub(started[sid])))
			}
		}
	}
}

// profiles is DRORCH_BENCH_PPROF: a directory where the worker writes a CPU
// profile of each workflow the bench runs (cpu-N.pprof, logged per step), to
// read with `go tool pprof -top <dir>/cpu-N.pprof` (profiles carry their symbols).
var profiles = os.Getenv("DRORCH_BENCH_PPROF")

// profile starts the worker's CPU profile of step what, when profiles is
// set, and returns what stops it.
func (e *env) profile(what string) func() {
	if profiles == "" {
		return func() {}
	}
	e.profiled++
	n := e.profiled
	_ = syscall.Kill(e.worker.Process.Pid, syscall.SIGUSR1)
	return func() {
		_ = syscall.Kill(e.worker.Process.Pid, syscall.SIGUSR2)
		logf("%s: CPU profile %s", what, filepath.Join(profiles, fmt.Sprintf("cpu-%d.pprof", n)))
	}
}

func minioClient(m *testenv.MinIO) (*minio.Client, error) {
	return minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
}

// vmHWM returns the peak resident set size of a process.
func vmHWM(pid int) (int64, error) { return vmStatus(pid, "VmHWM") }

// vmStatus returns a size field of /proc/<pid>/status, such as VmRSS.
func vmStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 10, 64)
			return kb * kiB, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

func rate(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func dur(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

func human(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/float64(miB)) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b)
	return hex.EncodeToString(b)
}
