package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"go.temporal.io/api/enums/v1"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// walPG is a PostgreSQL 15 cluster that archives its WAL into the primary
// site's repository of the stack's plan with drorch-worker wal-push.
type walPG struct {
	pg   *testenv.Postgres
	conn *pgx.Conn
	bin  string
}

// startArchivingPostgres starts a cluster whose archive_command is
// drorch-worker wal-push to site. PostgreSQL runs as the user postgres
// and passes only PG* variables to its children, so the command gets a
// config of its own whose secrets are files postgres may read.
func startArchivingPostgres(t *testing.T, s *stack, site string) *walPG {
	t.Helper()
	pg := testenv.StartPostgres(t)
	bin := workerBinary(t)
	root := filepath.Dir(pg.Dir)
	// The binary's directory is private to the test's user.
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(cfg)
	secrets := filepath.Join(root, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, kv := range s.env {
		name, value, _ := strings.Cut(kv, "=")
		file := filepath.Join(secrets, name)
		if err := os.WriteFile(file, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
		text = strings.ReplaceAll(text, "env:"+name, "file:"+file)
	}
	cfgPath := filepath.Join(root, "drorch-wal.yaml")
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		chownPostgres(t, secrets, cfgPath)
	}
	conf := fmt.Sprintf("archive_mode = on\narchive_command = '%s wal-push --plan %s --site %s --config %s %%p'\n", bin, plan, site, cfgPath)
	f, err := os.OpenFile(filepath.Join(pg.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(conf); err != nil {
		t.Fatal(err)
	}
	f.Close()
	pg.Stop(t) // archive_mode takes a restart
	pg.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return &walPG{pg: pg, conn: conn, bin: bin}
}

func chownPostgres(t *testing.T, paths ...string) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, root := range paths {
		err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, uid, gid)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// switchWAL writes a row and closes the current segment; it returns the
// segment's name, which PostgreSQL then archives.
func (w *walPG) switchWAL(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	if _, err := w.conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id serial, at timestamptz DEFAULT now()); INSERT INTO t DEFAULT VALUES"); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := w.conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// walObject reads files/wal/<name> at site; nil when absent.
func (s *stack) walObject(site, name string) []byte {
	s.t.Helper()
	mc := s.minio[site].Client(s.t)
	obj, err := mc.GetObject(context.Background(), "drorch", plan+"/wal/"+name, minio.GetObjectOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	defer obj.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(obj); err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NoSuchBucket" {
			return nil
		}
		s.t.Fatal(err)
	}
	return b.Bytes()
}

// walCmd runs drorch-worker wal-push or wal-fetch with the stack's config
// and returns its exit code and stderr.
func (s *stack) walCmd(bin string, args ...string) (int, string) {
	s.t.Helper()
	cmd := exec.Command(bin, append([]string{args[0], "--plan", plan, "--site", "primary", "--config", s.cfgPath}, args[1:]...)...)
	cmd.Env = append(os.Environ(), s.env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stderr.String()
	}
	if err != nil {
		s.t.Fatal(err)
	}
	return 0, stderr.String()
}

// TestWALArchive: PostgreSQL archives each finished segment through
// wal-push into the repository; wal-fetch gives back the same bytes; a
// second push of the same segment is accepted, a different file under its
// name refused, a damaged object refused with an error naming it, and an
// absent file reported as absent.
func TestWALArchive(t *testing.T) {
	s := newStack(t, stackOptions{})
	w := startArchivingPostgres(t, s, "primary")
	name := w.switchWAL(t)
	waitFor(t, "segment "+name+" in the primary's repository", 30*time.Second, func() bool { return s.walObject("primary", name) != nil })
	// The object is stored before wal-push exits, and PostgreSQL counts the
	// segment archived only after: wait for its bookkeeping too.
	var archived string
	waitFor(t, "pg_stat_archiver to count "+name+" archived", 30*time.Second, func() bool {
		if err := w.conn.QueryRow(context.Background(), "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").Scan(&archived); err != nil {
			t.Fatal(err)
		}
		return archived >= name
	})

	// What PostgreSQL wrote is what comes back.
	segment, err := os.ReadFile(filepath.Join(w.pg.Dir, "pg_wal", name))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if code, stderr := s.walCmd(w.bin, "wal-fetch", name, filepath.Join(dir, "RECOVERYXLOG")); code != 0 {
		t.Fatalf("wal-fetch %s: exit %d: %s", name, code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "RECOVERYXLOG")); !bytes.Equal(got, segment) {
		t.Fatalf("wal-fetch %s gave %d bytes that differ from the %d in pg_wal", name, len(got), len(segment))
	}

	// A duplicate push of the same segment is accepted.
	same := filepath.Join(dir, "same", name)
	writeBytes(t, same, segment)
	if code, stderr := s.walCmd(w.bin, "wal-push", same); code != 0 {
		t.Fatalf("second wal-push of %s: exit %d: %s", name, code, stderr)
	}
	// A different file under the name is refused, and the archive keeps
	// the segment.
	other := bytes.Clone(segment)
	other[len(other)/2] ^= 0xff
	diff := filepath.Join(dir, "other", name)
	writeBytes(t, diff, other)
	code, stderr := s.walCmd(w.bin, "wal-push", diff)
	if code != 2 || !strings.Contains(stderr, "different WAL file") || !strings.Contains(stderr, "wal/"+name) {
		t.Fatalf("wal-push of a different %s: exit %d, stderr %q; want exit 2 naming the conflict", name, code, stderr)
	}
	if code, stderr := s.walCmd(w.bin, "wal-fetch", name, filepath.Join(dir, "again")); code != 0 {
		t.Fatalf("wal-fetch %s after the refused push: exit %d: %s", name, code, stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "again")); !bytes.Equal(got, segment) {
		t.Fatal("the refused push changed the archived segment")
	}

	// An absent file (PostgreSQL asks for the next timeline's history).
	if code, stderr := s.walCmd(w.bin, "wal-fetch", "00000002.history", filepath.Join(dir, "RECOVERYHISTORY")); code != 1 {
		t.Fatalf("wal-fetch of an absent file: exit %d (%s), want 1", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "RECOVERYHISTORY")); !os.IsNotExist(err) {
		t.Fatalf("wal-fetch of an absent file left %s: %v", "RECOVERYHISTORY", err)
	}

	// A damaged object is caught, named, and never handed over.
	body := s.walObject("primary", name)
	body[len(body)-100] ^= 0x01
	mc := s.minio["primary"].Client(t)
	if _, err := mc.PutObject(context.Background(), "drorch", plan+"/wal/"+name, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	code, stderr = s.walCmd(w.bin, "wal-fetch", name, bad)
	if code != 126 || !strings.Contains(stderr, "wal/"+name) || !strings.Contains(stderr, "corrupt") {
		t.Fatalf("wal-fetch of a damaged %s: exit %d, stderr %q; want exit 126 naming the object as corrupted", name, code, stderr)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("wal-fetch of a damaged file left %s: %v", bad, err)
	}
	for _, secret := range s.secrets {
		if strings.Contains(stderr, secret) {
			t.Fatal("wal-fetch's error shows a secret")
		}
	}
}

func writeBytes(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWALShipping: with PostgreSQL archiving into the primary's repository,
// a segment closed by pg_switch_wal reaches the secondary's repository
// within seconds through the ShipWAL workflow, byte for byte, and the wal
// query then reports the secondary caught up.
func TestWALShipping(t *testing.T) {
	s := newStack(t, stackOptions{planExtra: func(*stack) string { return "    wal: {ship: \"on\", shipEvery: 1s}\n" }})
	s.startWorker()
	w := startArchivingPostgres(t, s, "primary")
	// schedule apply starts the shipping, and a second apply leaves it be.
	var runIDs []string
	for range 2 {
		out, stderr, err := s.drorch("schedule", "apply", "--plan", plan)
		if err != nil || !strings.Contains(out, "WAL shipping runs (workflow "+workflows.WALShipID(plan)) {
			t.Fatalf("schedule apply: %v\n%s%s", err, out, stderr)
		}
		desc, err := s.cl.DescribeWorkflowExecution(context.Background(), workflows.WALShipID(plan), "")
		if err != nil {
			t.Fatal(err)
		}
		runIDs = append(runIDs, desc.GetWorkflowExecutionInfo().GetExecution().GetRunId())
	}
	if runIDs[0] != runIDs[1] {
		t.Fatalf("a second schedule apply started another shipping run: %v", runIDs)
	}
	run := s.cl.GetWorkflow(context.Background(), workflows.WALShipID(plan), runIDs[0])
	t.Cleanup(func() { _ = s.cl.TerminateWorkflow(context.Background(), run.GetID(), "", "test over") })

	name := w.switchWAL(t)
	switched := time.Now()
	waitFor(t, "segment "+name+" in the secondary's repository", 30*time.Second, func() bool { return s.walObject("secondary", name) != nil })
	t.Logf("segment %s at the secondary %s after pg_switch_wal", name, time.Since(switched).Round(time.Millisecond))
	if a, b := s.walObject("primary", name), s.walObject("secondary", name); !bytes.Equal(a, b) {
		t.Fatalf("the secondary's copy of %s differs from the primary's", name)
	}

	var st workflows.WALStatus
	waitFor(t, "the wal query to report the secondary caught up", 20*time.Second, func() bool {
		v, err := s.cl.QueryWorkflow(context.Background(), run.GetID(), "", workflows.QueryWAL)
		if err != nil || v.Get(&st) != nil || len(st.Standbys) != 1 {
			return false
		}
		sb := st.Standbys[0]
		return sb.Site == "secondary" && sb.Last >= name && sb.Pending == 0 && sb.Lag == 0 && sb.Error == ""
	})
	if st.Active != "primary" || st.Standbys[0].Shipped < 1 || st.Standbys[0].LastShipped.IsZero() {
		t.Fatalf("wal status %+v: want active primary and files shipped to the secondary", st)
	}

	// drorch status shows it, as text and as JSON.
	out, stderr, err := s.drorch("status", "--plan", plan)
	if err != nil || !strings.Contains(out, "WAL shipping") || !strings.Contains(out, "WAL to secondary") || !strings.Contains(out, "WAL lag 0s (caught up)") {
		t.Fatalf("drorch status: %v\n%s%s", err, out, stderr)
	}
	t.Logf("drorch status:\n%s", out)
	out, stderr, err = s.drorch("status", "--plan", plan, "--json")
	var res workflows.StatusResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.WAL == nil || len(res.WAL.Standbys) != 1 || res.WAL.Standbys[0].Last < name {
		t.Fatalf("drorch status --json: %v\n%s%s", err, out, stderr)
	}

	// Turning shipping off in the config and applying it stops the run.
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	editConfig := func(old, new string) {
		t.Helper()
		if !bytes.Contains(cfg, []byte(old)) {
			t.Fatalf("the config has no %q:\n%s", old, cfg)
		}
		cfg = bytes.Replace(cfg, []byte(old), []byte(new), 1)
		if err := os.WriteFile(s.cfgPath, cfg, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	shipping := func() enums.WorkflowExecutionStatus {
		desc, err := s.cl.DescribeWorkflowExecution(context.Background(), workflows.WALShipID(plan), "")
		if err != nil {
			t.Fatal(err)
		}
		return desc.GetWorkflowExecutionInfo().GetStatus()
	}
	editConfig(`ship: "on"`, `ship: "off"`)
	waitFor(t, "the shipping run to be listed", 10*time.Second, func() bool {
		out, _, _ := s.drorch("schedule", "apply", "--plan", plan)
		return strings.Contains(out, "WAL shipping stopped, wal.ship is off")
	})
	waitFor(t, "the shipping run to end", 20*time.Second, func() bool { return shipping() == enums.WORKFLOW_EXECUTION_STATUS_CANCELED })

	// A plan removed from the config keeps its shipping until --prune.
	editConfig(`ship: "off"`, `ship: "on"`)
	if out, stderr, err := s.drorch("schedule", "apply", "--plan", plan); err != nil || shipping() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatalf("schedule apply with shipping on again: %v\n%s%s", err, out, stderr)
	}
	editConfig("\n  "+plan+":\n", "\n  renamed:\n")
	t.Cleanup(func() {
		_ = s.cl.TerminateWorkflow(context.Background(), workflows.WALShipID("renamed"), "", "test over")
	})
	waitFor(t, "apply to keep the removed plan's shipping", 10*time.Second, func() bool {
		out, _, _ := s.drorch("schedule", "apply")
		return strings.Contains(out, "plan "+plan+": WAL shipping kept, the plan is not in the config")
	})
	if shipping() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Fatal("schedule apply without --prune stopped the shipping of a plan no longer in the config")
	}
	if out, stderr, err := s.drorch("schedule", "apply", "--prune"); err != nil || !strings.Contains(out, "plan "+plan+": WAL shipping stopped, the plan is not in the config") {
		t.Fatalf("schedule apply --prune: %v\n%s%s", err, out, stderr)
	}
	waitFor(t, "the removed plan's shipping to end", 20*time.Second, func() bool { return shipping() == enums.WORKFLOW_EXECUTION_STATUS_CANCELED })
}
