package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/rs/zerolog"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

const plan = "files"

// stack is one test's deployment: the shared Temporal server, a fresh MinIO
// per site, a config file whose secrets are in the environment, source
// directories, and a task queue of its own.
type stack struct {
	t        *testing.T
	temporal *testenv.Temporal
	minio    map[string]*testenv.MinIO
	cl       client.Client
	queue    string
	dir      string
	cfgPath  string
	cfg      *config.Config
	secrets  []string // every secret value, to look for where none may be
	env      []string // the secrets' environment, for worker processes
	logs     *syncBuffer
	primary  string // the primary source's path when not <dir>/primary
	runs     []client.WorkflowRun
	sites    []string // primary, secondary, and remote with stackOptions.third
}

type stackOptions struct {
	bucket    string // default "drorch"
	encrypt   bool
	key       string // with encrypt: this hex key, not a random one
	overrides func(site string, store map[string]string)
	onChange  string                // the primary source's onChange, default unset
	hooks     func(s *stack) string // the primary source's hooks, a YAML flow mapping
	planExtra func(s *stack) string // more of the plan's YAML, indented 4 spaces
	// source, when it returns a YAML flow mapping, is a site's source
	// instead of {driver: dir, path: <dir>/<site>}.
	source func(s *stack, site string) string
	// primarySource, when set, is the primary source's path (default
	// <dir>/primary), and primaryExtra more of its flow mapping, such as
	// "snapshot: reflink".
	primarySource string
	primaryExtra  func(s *stack) string
	// darkable, when set, puts the primary's MinIO in this network
	// namespace, whose link the test can cut.
	darkable *testenv.NetNS
	// third adds a third site, "remote", with its own MinIO and source
	// directory: the plan's secondaries are then [secondary, remote].
	third bool
}

func newStack(t *testing.T, opts stackOptions) *stack {
	t.Helper()
	s := &stack{
		t:        t,
		temporal: testenv.SharedTemporal(t),
		minio:    map[string]*testenv.MinIO{},
		dir:      t.TempDir(),
		logs:     &syncBuffer{},
		primary:  opts.primarySource,
		sites:    []string{"primary", "secondary"},
	}
	if opts.third {
		s.sites = append(s.sites, "remote")
	}
	s.cl = s.temporal.Client(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("worker log, last lines:\n%s", s.logs.Tail(6000))
		}
	})
	s.queue = "e2e-" + regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-") + "-" + randomHex(4)
	t.Cleanup(func() { recordHistories(t, s.cl, s.queue) })
	if opts.bucket == "" {
		opts.bucket = "drorch"
	}
	var cfg strings.Builder
	cfg.WriteString("sites:\n")
	for _, site := range s.sites {
		var m *testenv.MinIO
		if site == "primary" && opts.darkable != nil {
			m = testenv.StartMinIOIn(t, opts.darkable)
		} else {
			m = testenv.StartMinIO(t)
		}
		s.minio[site] = m
		up := strings.ToUpper(site)
		store := map[string]string{"accessKey": m.AccessKey, "secretKey": m.SecretKey, "bucket": opts.bucket}
		if opts.overrides != nil {
			opts.overrides(site, store)
		}
		s.setenv("E2E_"+up+"_ACCESS", store["accessKey"])
		s.setenv("E2E_"+up+"_SECRET", store["secretKey"])
		fmt.Fprintf(&cfg, "  %s:\n    store: {driver: s3, endpoint: %s, bucket: %s, accessKey: env:E2E_%s_ACCESS, secretKey: env:E2E_%s_SECRET, insecure: true}\n",
			site, m.Endpoint, store["bucket"], up, up)
	}
	secondaries := "secondary: secondary"
	if opts.third {
		secondaries = "secondaries: [secondary, remote]"
	}
	fmt.Fprintf(&cfg, "plans:\n  %s:\n    primary: primary\n    %s\n    source:\n", plan, secondaries)
	for _, site := range s.sites {
		p := s.source(site)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		extra := ""
		if site == "primary" && opts.onChange != "" {
			extra = ", onChange: " + opts.onChange
		}
		if site == "primary" && opts.hooks != nil {
			extra += ", hooks: " + opts.hooks(s)
		}
		if opts.source != nil && opts.source(s, site) != "" {
			fmt.Fprintf(&cfg, "      %s: %s\n", site, opts.source(s, site))
			continue
		}
		if site == "primary" && opts.primaryExtra != nil {
			extra += ", " + opts.primaryExtra(s)
		}
		fmt.Fprintf(&cfg, "      %s: {driver: dir, path: %s%s}\n", site, p, extra)
	}
	if opts.encrypt {
		key := opts.key
		if key == "" {
			key = randomHex(32)
		}
		s.setenv("E2E_KEY", key)
		cfg.WriteString("    encryption: {key: env:E2E_KEY}\n")
	}
	if opts.planExtra != nil {
		cfg.WriteString(opts.planExtra(s))
	}
	s.cfgPath = filepath.Join(s.dir, "drorch.yaml")
	if err := os.WriteFile(s.cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.cfg, err = config.Load(s.cfgPath); err != nil {
		t.Fatalf("config: %v\n%s", err, cfg.String())
	}
	return s
}

func (s *stack) setenv(name, value string) {
	s.t.Setenv(name, value)
	s.env = append(s.env, name+"="+value)
	s.secrets = append(s.secrets, value)
}

func (s *stack) source(site string) string {
	if site == "primary" && s.primary != "" {
		return s.primary
	}
	return filepath.Join(s.dir, site)
}

// startWorker runs a worker for every site inside the test process.
func (s *stack) startWorker() {
	s.t.Helper()
	zl := zerolog.New(s.logs).Level(zerolog.DebugLevel)
	acts := activities.New(s.cfg, s.cl, zl)
	var ws []worker.Worker
	w := worker.New(s.cl, s.queue, activities.WorkerOptions())
	for _, wf := range workflows.All {
		w.RegisterWorkflow(wf)
	}
	w.RegisterActivity(acts)
	ws = append(ws, w)
	for _, site := range s.sites {
		for _, q := range []string{workflows.SiteTaskQueue(s.queue, site), workflows.SiteDataTaskQueue(s.queue, site)} {
			sw := worker.New(s.cl, q, activities.WorkerOptions())
			sw.RegisterActivity(acts)
			ws = append(ws, sw)
		}
	}
	for _, w := range ws {
		if err := w.Start(); err != nil {
			s.t.Fatal(err)
		}
	}
	s.t.Cleanup(func() {
		for _, w := range ws {
			w.Stop()
		}
	})
}

var workerBin struct {
	once sync.Once
	path string
	err  error
}

// workerProcess is the drorch-worker binary serving every site of a stack.
type workerProcess struct {
	cmd *exec.Cmd
	log *syncBuffer
}

// workerBinary is the drorch-worker binary, built once per test run.
func workerBinary(t *testing.T) string {
	t.Helper()
	workerBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "drorch-e2e-bin")
		if err != nil {
			workerBin.err = err
			return
		}
		workerBin.path = filepath.Join(dir, "drorch-worker")
		out, err := exec.Command("go", "build", "-o", workerBin.path, "github.com/drorch/drorch/worker").CombinedOutput()
		if err != nil {
			workerBin.err = fmt.Errorf("build drorch-worker: %v\n%s", err, out)
		}
	})
	if workerBin.err != nil {
		t.Fatal(workerBin.err)
	}
	return workerBin.path
}

// spawnWorker starts the drorch-worker binary, built once per test run,
// with extra flags.
func (s *stack) spawnWorker(extra ...string) *workerProcess {
	s.t.Helper()
	bin := workerBinary(s.t)
	wp := &workerProcess{log: &syncBuffer{}}
	args := []string{"--config", s.cfgPath}
	for _, site := range s.sites {
		args = append(args, "--site", site)
	}
	wp.cmd = exec.Command(bin, append(args,
		"--task-queue", s.queue, "--address", s.temporal.Address, "--namespace", s.temporal.Namespace, "--log-level", "debug")...)
	wp.cmd.Args = append(wp.cmd.Args, extra...)
	wp.cmd.Env = append(os.Environ(), s.env...)
	var out io.Writer = wp.log
	if dir := os.Getenv("DRORCH_E2E_LOGS"); dir != "" {
		// Keep worker logs beyond the test, to debug a hang.
		f, err := os.CreateTemp(dir, "worker-*.log")
		if err != nil {
			s.t.Fatal(err)
		}
		s.t.Cleanup(func() { f.Close() })
		out = io.MultiWriter(wp.log, f)
	}
	wp.cmd.Stdout, wp.cmd.Stderr = out, out
	wp.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := wp.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		wp.kill()
		s.logs.Write(wp.log.Bytes())
	})
	return wp
}

func (wp *workerProcess) kill() {
	if wp.cmd.ProcessState == nil {
		_ = wp.cmd.Process.Signal(syscall.SIGKILL)
		_ = wp.cmd.Wait()
	}
}

// start starts a workflow on the stack's queue the way the CLI does.
func (s *stack) start(op string, wf, in any) client.WorkflowRun {
	s.t.Helper()
	site := ""
	id := workflows.WorkflowID(plan, op, time.Now()) + "-" + randomHex(3)
	run, err := s.cl.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: id, TaskQueue: s.queue, TypedSearchAttributes: workflows.Attributes(plan, site, op),
	}, wf, in)
	if err != nil {
		s.t.Fatalf("start %s: %v", op, err)
	}
	s.runs = append(s.runs, run)
	return run
}

// waitLimit bounds the wait for one workflow: DRORCH_E2E_WAIT (a duration)
// shortens it to debug a hang.
var waitLimit = func() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("DRORCH_E2E_WAIT")); err == nil {
		return d
	}
	return 15 * time.Minute
}()

// run starts a workflow and waits for its result.
func (s *stack) run(op string, wf, in, res any) error {
	s.t.Helper()
	return s.wait(s.start(op, wf, in), res)
}

func (s *stack) wait(run client.WorkflowRun, res any) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := run.Get(ctx, res)
	if ctx.Err() != nil {
		// Say where it hangs: the workflow's step and its pending work.
		qctx, qcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer qcancel()
		if v, qerr := s.cl.QueryWorkflow(qctx, run.GetID(), run.GetRunID(), workflows.QueryProgress); qerr == nil {
			var p workflows.Progress
			_ = v.Get(&p)
			s.t.Logf("%s still runs: step %q, waiting %q, steps %+v", run.GetID(), p.Step, p.Waiting, p.Steps)
		}
		if desc, derr := s.cl.DescribeWorkflowExecution(qctx, run.GetID(), run.GetRunID()); derr == nil {
			for _, pa := range desc.GetPendingActivities() {
				s.t.Logf("pending activity %s attempt %d: %s", pa.GetActivityType().GetName(), pa.GetAttempt(), pa.GetLastFailure().GetMessage())
			}
			for _, c := range desc.GetPendingChildren() {
				s.t.Logf("pending child %s", c.GetWorkflowId())
			}
		}
	}
	return err
}

func (s *stack) backup() workflows.BackupResult {
	s.t.Helper()
	var res workflows.BackupResult
	if err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, &res); err != nil {
		s.t.Fatalf("backup: %v\nworker log:\n%s", err, s.logs.Tail(4000))
	}
	return res
}

func (s *stack) transmit() workflows.TransmitResult {
	s.t.Helper()
	var res workflows.TransmitResult
	if err := s.run(workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan}, &res); err != nil {
		s.t.Fatalf("transmit: %v\nworker log:\n%s", err, s.logs.Tail(4000))
	}
	return res
}

func (s *stack) restore(site, to string) workflows.RestoreResult {
	s.t.Helper()
	var res workflows.RestoreResult
	if err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: site, To: to}, &res); err != nil {
		s.t.Fatalf("restore: %v\nworker log:\n%s", err, s.logs.Tail(4000))
	}
	return res
}

// chunkObjects lists the chunk objects at a site: key → last modified.
func (s *stack) chunkObjects(site string) map[string]time.Time {
	s.t.Helper()
	mc := s.minio[site].Client(s.t)
	out := map[string]time.Time{}
	for obj := range mc.ListObjects(context.Background(), "drorch", minio.ListObjectsOptions{Prefix: plan + "/chunks/", Recursive: true}) {
		if obj.Err != nil {
			if minio.ToErrorResponse(obj.Err).Code == "NoSuchBucket" {
				break // nothing arrived yet
			}
			s.t.Fatalf("list chunks at %s: %v", site, obj.Err)
		}
		out[obj.Key] = obj.LastModified
	}
	return out
}

// stagingHas reports whether an object whose key contains part exists under
// the plan's staging area at site.
func (s *stack) stagingHas(site, part string) bool {
	mc := s.minio[site].Client(s.t)
	for obj := range mc.ListObjects(context.Background(), "drorch", minio.ListObjectsOptions{Prefix: plan + "/staging/", Recursive: true}) {
		if obj.Err == nil && strings.Contains(obj.Key, part) {
			return true
		}
	}
	return false
}

// historyJSON returns the whole history of every run the stack started, as
// protojson text.
func (s *stack) historyJSON() string {
	s.t.Helper()
	var b strings.Builder
	for _, run := range s.runs {
		it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				s.t.Fatalf("history of %s: %v", run.GetID(), err)
			}
			js, err := protojson.Marshal(ev)
			if err != nil {
				s.t.Fatal(err)
			}
			b.Write(js)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// resumePoint is the "next" of the resume point in the heartbeat the server
// holds for the run's pending activity, or -1.
func (s *stack) resumePoint(run client.WorkflowRun) int {
	desc, err := s.cl.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	if err != nil {
		return -1
	}
	for _, pa := range desc.GetPendingActivities() {
		var hb struct {
			Resume struct {
				Next int `json:"next"`
			} `json:"resume"`
		}
		if pa.GetHeartbeatDetails() != nil && converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &hb) == nil {
			return hb.Resume.Next
		}
	}
	return -1
}

// historyLength counts the events in a run's history.
func (s *stack) historyLength(run client.WorkflowRun) int {
	s.t.Helper()
	it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	n := 0
	for it.HasNext() {
		if _, err := it.Next(); err != nil {
			s.t.Fatal(err)
		}
		n++
	}
	return n
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.b.Bytes())
}

func (b *syncBuffer) Tail(n int) string {
	all := b.Bytes()
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return string(all)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
