package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// The anchors are the tools drorch is measured against (issue 10): restic for
// backup and restore, rclone for plain upload and MinIO→MinIO copy. They run
// on the same data and the same MinIO servers as drorch, with their defaults,
// and the credentials only in their own environment: no config file with
// secrets is written.
type anchors struct {
	dir       string // restic's cache and restore targets
	minio     map[string]*testenv.MinIO
	password  string // the restic repositories'
	hasRestic bool   // installed
	hasRclone bool
}

func newAnchors(dir string, minio map[string]*testenv.MinIO) *anchors {
	_, rerr := exec.LookPath("restic")
	_, cerr := exec.LookPath("rclone")
	return &anchors{dir: dir, minio: minio, password: randomHex(16), hasRestic: rerr == nil, hasRclone: cerr == nil}
}

// measured is one tool's run: wall time and the child's peak RSS, or why
// there is none.
type measured struct {
	d    time.Duration
	rss  int64
	none string // "not installed", "–"
}

var (
	notInstalled = measured{none: "not installed"}
	notMeasured  = measured{none: "–"}
)

func (m measured) String() string {
	if m.none != "" {
		return m.none
	}
	if m.rss == 0 {
		return dur(m.d)
	}
	return fmt.Sprintf("%s, %s RSS", dur(m.d), human(m.rss))
}

// speed is how many times faster drorch is than other: ≥ 1 means drorch
// is at least as fast.
func speed(drorch, other measured) string {
	if drorch.none != "" || other.none != "" {
		return ""
	}
	return fmt.Sprintf("%.2f×", other.d.Seconds()/drorch.d.Seconds())
}

// tool runs name with args and env added to the bench's environment, and
// times it. A failure carries the tail of the tool's output.
func (a *anchors) tool(what string, env []string, name string, args ...string) (measured, error) {
	logf("%s…", what)
	syscall.Sync()
	cmd := exec.Command(name, args...)
	cmd.Env = append(ownEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	var cpu map[string]time.Duration
	if meter != nil {
		cpu = meter.snap()
	}
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		b := out.Bytes()
		return measured{}, fmt.Errorf("%s: %s %s: %w\noutput ends with:\n%s", what, name, strings.Join(args, " "), err, b[max(0, len(b)-4000):])
	}
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss * kiB
	}
	logf("%s: %s", what, dur(d))
	if meter != nil {
		own := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		logf("  %s", meter.since(cpu, name+" "+dur(own)))
	}
	return measured{d: d, rss: rss}, nil
}

// ownEnv is the bench's environment without the variables through which
// the user's own S3, restic or rclone settings would reach the tools: an
// AWS_CA_BUNDLE or AWS_PROFILE, say, would point them elsewhere than the
// bench's plain-HTTP MinIO (rclone fails on AWS_CA_BUNDLE over HTTP).
func ownEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "RESTIC_") && !strings.HasPrefix(kv, "RCLONE_") {
			env = append(env, kv)
		}
	}
	return env
}

// resticEnv points restic at a repository in a bucket of the primary MinIO.
func (a *anchors) resticEnv(bucket string) []string {
	m := a.minio["primary"]
	return []string{
		"RESTIC_REPOSITORY=s3:http://" + m.Endpoint + "/" + bucket,
		"RESTIC_PASSWORD=" + a.password,
		"AWS_ACCESS_KEY_ID=" + m.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + m.SecretKey,
		"RESTIC_CACHE_DIR=" + filepath.Join(a.dir, "restic-cache"),
	}
}

// resticInit creates the repository in bucket, untimed.
func (a *anchors) resticInit(bucket string) error {
	_, err := a.tool("restic: init "+bucket, a.resticEnv(bucket), "restic", "init")
	return err
}

func (a *anchors) resticBackup(what, bucket, src string) (measured, error) {
	if !a.hasRestic {
		return notInstalled, nil
	}
	return a.tool("restic: "+what, a.resticEnv(bucket), "restic", "backup", "--quiet", "--host", "bench", src)
}

func (a *anchors) resticRestore(bucket string) (measured, error) {
	if !a.hasRestic {
		return notInstalled, nil
	}
	target := filepath.Join(a.dir, "restic-restore")
	m, err := a.tool("restic: restore", a.resticEnv(bucket), "restic", "restore", "latest", "--target", target)
	if err == nil {
		err = os.RemoveAll(target)
	}
	return m, err
}

// rcloneEnv configures one remote per MinIO, named for its site, through
// rclone's RCLONE_CONFIG_<NAME>_* variables.
func (a *anchors) rcloneEnv() []string {
	var env []string
	for site, m := range a.minio {
		p := "RCLONE_CONFIG_" + strings.ToUpper(site) + "_"
		env = append(env, p+"TYPE=s3", p+"PROVIDER=Minio", p+"ENDPOINT=http://"+m.Endpoint,
			p+"ACCESS_KEY_ID="+m.AccessKey, p+"SECRET_ACCESS_KEY="+m.SecretKey, p+"REGION=us-east-1")
	}
	return env
}

// rclone runs rclone's command (copy, sync) from src to dst with its default
// parallelism.
func (a *anchors) rclone(what, command, src, dst string) (measured, error) {
	if !a.hasRclone {
		return notInstalled, nil
	}
	return a.tool("rclone: "+what, a.rcloneEnv(), "rclone", "--config", "", command, src, dst)
}

// smallFiles writes n files of 2 KiB of random bytes into dir, 1000 to a
// directory: the tree where the cost per file and per object dominates.
func smallFiles(ds *dataSet, dir string, n int) error {
	small := &dataSet{dir: dir, data: ds.data}
	for i := range n {
		if err := small.write(fmt.Sprintf("%03d/%05d.dat", i/1000, i), 0, 2*kiB, os.O_CREATE|os.O_EXCL|os.O_WRONLY); err != nil {
			return err
		}
	}
	return nil
}

// smallCount reads DRORCH_BENCH_SMALL: the number of 2 KiB files, 0 to skip.
func smallCount() (int, error) {
	s := os.Getenv("DRORCH_BENCH_SMALL")
	if s == "" {
		return 20000, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("DRORCH_BENCH_SMALL=%q: want a number of files, 0 to skip", s)
	}
	return n, nil
}

// sideBySide is a row of the second table: drorch's time beside restic's and
// rclone's for the same work.
type sideBySide struct {
	name                  string
	drorch, restic, clone measured
}

func printSideBySide(w io.Writer, title string, rows []sideBySide) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\n%s\n\n", title)
	fmt.Fprintln(tw, "row\tdrorch\trestic\trclone\tdrorch/restic\tdrorch/rclone\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", r.name, r.drorch, r.restic, r.clone, speed(r.drorch, r.restic), speed(r.drorch, r.clone))
	}
	return tw.Flush()
}

// toolVersion is the first line of `name version`, or "not installed".
func toolVersion(name string, installed bool) string {
	if !installed {
		return name + " not installed"
	}
	out, err := exec.Command(name, "version").Output()
	if err != nil {
		return name + " (version unknown)"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}

// smallRow writes n small files into src and backs them up with drorch (the
// plan smallPlan) and restic, and uploads them with rclone.
func (e *env) smallRow(ctx context.Context, a *anchors, ds *dataSet, src string, n int) (sideBySide, error) {
	row := sideBySide{name: fmt.Sprintf("%d × 2 KiB files, backup (rclone: copy)", n)}
	logf("writing %d files of 2 KiB…", n)
	if err := smallFiles(ds, src, n); err != nil {
		return row, fmt.Errorf("small files: %w", err)
	}
	var res workflows.BackupResult
	d, err := e.execute(ctx, fmt.Sprintf("%d small files: full backup", n), workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: smallPlan}, &res)
	if err != nil {
		return row, err
	}
	row.drorch = measured{d: d}
	if a.hasRestic {
		if err := a.resticInit("restic-small"); err != nil {
			return row, err
		}
	}
	if row.restic, err = a.resticBackup(fmt.Sprintf("%d small files: full backup", n), "restic-small", src); err != nil {
		return row, err
	}
	row.clone, err = a.rclone(fmt.Sprintf("copy of %d small files", n), "copy", src, "primary:rclone-small")
	return row, err
}
