package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// A database-like file: fixed-size records, each naming its index and
// version and sealed by a checksum, appended and overwritten in place.
const recordSize = 4096

func record(index, version uint64) []byte {
	b := make([]byte, recordSize)
	binary.LittleEndian.PutUint64(b[0:], index)
	binary.LittleEndian.PutUint64(b[8:], version)
	for i := 16; i < recordSize-sha256.Size; i++ {
		b[i] = byte(index*31 + version*7 + uint64(i))
	}
	sum := sha256.Sum256(b[:recordSize-sha256.Size])
	copy(b[recordSize-sha256.Size:], sum[:])
	return b
}

// checkRecords says what is wrong with a restored record file: a torn
// record, a bad checksum, or a gap (a record missing before a later one).
func checkRecords(t *testing.T, data []byte) {
	t.Helper()
	if len(data) == 0 || len(data)%recordSize != 0 {
		t.Fatalf("the restored file has %d bytes: not a whole number of records (a torn append)", len(data))
	}
	for i := 0; i < len(data)/recordSize; i++ {
		r := data[i*recordSize : (i+1)*recordSize]
		sum := sha256.Sum256(r[:recordSize-sha256.Size])
		if !bytes.Equal(sum[:], r[recordSize-sha256.Size:]) {
			t.Fatalf("record %d of %d is torn or missing: its checksum does not match", i, len(data)/recordSize)
		}
		if idx := binary.LittleEndian.Uint64(r); idx != uint64(i) {
			t.Fatalf("record %d holds index %d", i, idx)
		}
	}
}

// writer keeps appending records to and overwriting records of a file, one
// whole record per write, until stopped.
type writer struct {
	f      *os.File
	writes atomic.Int64
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startWriter(t *testing.T, path string, initial int) *writer {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for i := range initial {
		if _, err := f.Write(record(uint64(i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	w := &writer{f: f, stop: make(chan struct{})}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		n, versions := uint64(initial), map[uint64]uint64{}
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			i := n
			if rand.IntN(4) != 0 { // mostly overwrites, as a database segment sees
				i = rand.Uint64N(n)
			} else {
				n++
			}
			versions[i]++
			if _, err := f.WriteAt(record(i, versions[i]), int64(i)*recordSize); err != nil {
				t.Errorf("writer: %v", err)
				return
			}
			w.writes.Add(1)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	t.Cleanup(w.close)
	return w
}

func (w *writer) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	w.f.Close()
}

// clones lists the reflink clones beside a source.
func clones(t *testing.T, parent string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(parent, ".drorch-snapshot-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A file written all the time backs up, with snapshot: reflink, from a
// clone made on the XFS file system: the backup passes although the source
// fails on any file that changes while read (onChange: fail), as the same
// workload read live does, the restored
// file is whole (every record sealed, none missing before the last), the
// tree's metadata is kept, and the clone, and the stale one a crashed
// backup left, are gone afterwards.
func TestSnapshotReflinkBacksUpAFileThatKeepsChanging(t *testing.T) {
	mnt := testenv.MountXFS(t, 300)
	src := filepath.Join(mnt, "db")
	s := newStack(t, stackOptions{primarySource: src, onChange: "fail", primaryExtra: func(*stack) string { return "snapshot: reflink" }})

	conf := filepath.Join(src, "conf")
	if err := os.MkdirAll(conf, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "app.conf"), []byte("max_connections = 100\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("conf/app.conf", filepath.Join(src, "current.conf")); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, p := range []string{filepath.Join(conf, "app.conf"), conf} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	// A crashed backup's clone, of a run that no longer exists.
	stale := filepath.Join(mnt, ".drorch-snapshot-files-backup-0badf00d")
	if err := os.MkdirAll(filepath.Join(stale, "tree", "ro"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(stale, "tree", "ro"), 0o555); err != nil {
		t.Fatal(err)
	}

	w := startWriter(t, filepath.Join(src, "segment.db"), 8192) // 32 MiB
	s.startWorker()
	before := w.writes.Load()
	res := s.backup()
	during := w.writes.Load() - before
	w.close()
	if during < 10 {
		t.Fatalf("the writer wrote %d records during the backup: the test shows nothing", during)
	}
	t.Logf("backup read %d bytes while the writer wrote %d records", res.BytesRead, during)
	if !strings.Contains(res.Source, src) || strings.Contains(res.Source, ".drorch-snapshot") {
		t.Errorf("result source = %q, want the live path %s", res.Source, src)
	}
	if left := clones(t, mnt); len(left) != 0 {
		t.Fatalf("clones left after the backup: %v", left)
	}

	// The same workload read live fails: the test can tell the two apart.
	live := newStack(t, stackOptions{primarySource: filepath.Join(mnt, "live"), onChange: "fail"})
	lw := startWriter(t, filepath.Join(live.source("primary"), "segment.db"), 8192)
	live.startWorker()
	err := live.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
	lw.close()
	if err == nil || !strings.Contains(err.Error(), "changed while it was read") {
		t.Fatalf("the live backup of the file being written: %v, want it refused as changed while read", err)
	}

	to := filepath.Join(s.dir, "restored")
	s.restore("primary", to)
	data, err := os.ReadFile(filepath.Join(to, "segment.db"))
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, data)
	if target, err := os.Readlink(filepath.Join(to, "current.conf")); err != nil || target != "conf/app.conf" {
		t.Errorf("symlink = %q, %v", target, err)
	}
	for p, mode := range map[string]os.FileMode{"conf": os.ModeDir | 0o750, "conf/app.conf": 0o640} {
		fi, err := os.Lstat(filepath.Join(to, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode || !fi.ModTime().Equal(old) {
			t.Errorf("%s restored with mode %v mtime %v, want %v %v", p, fi.Mode(), fi.ModTime(), mode, old)
		}
	}
}

// Snapshot commands: create runs before the source is listed (the restore
// point holds what only the snapshot has), the backup reads the snapshot's
// path, and remove runs after the commit, and also after a backup that
// failed, and after each failed create.
func TestSnapshotCommandsAroundTheBackup(t *testing.T) {
	var snap, logPath, scripts string
	s := newStack(t, stackOptions{primaryExtra: func(s *stack) string {
		snap, logPath, scripts = filepath.Join(s.dir, "snap"), filepath.Join(s.dir, "snapshot.log"), s.dir
		return "snapshot: {create: [{exec: [sh, " + filepath.Join(s.dir, "create.sh") + "], timeout: 30s}], path: " + snap +
			", remove: [{exec: [sh, " + filepath.Join(s.dir, "remove.sh") + "]}]}"
	}})
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(scripts, name), []byte(body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logged := func() string {
		t.Helper()
		b, _ := os.ReadFile(logPath)
		os.Remove(logPath)
		return string(b)
	}
	write("create.sh", `echo "create $DRORCH_PHASE" >> `+logPath+`
if [ -f `+filepath.Join(scripts, "link")+` ]; then ln -s "$DRORCH_SOURCE_PATH" "$DRORCH_SNAPSHOT_PATH"; exit 0; fi
mkdir -p "$DRORCH_SNAPSHOT_PATH"
cp -a --reflink=auto "$DRORCH_SOURCE_PATH/." "$DRORCH_SNAPSHOT_PATH/"
echo "made by the snapshot" > "$DRORCH_SNAPSHOT_PATH/snapshot.txt"`)
	write("remove.sh", `echo "remove $DRORCH_PHASE $DRORCH_BACKUP_OK" >> `+logPath+`
rm -rf "$DRORCH_SNAPSHOT_PATH"`)
	if err := os.WriteFile(filepath.Join(s.source("primary"), "data.txt"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startWorker()

	t.Run("order", func(t *testing.T) {
		var res workflows.BackupResult
		run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})
		if err := s.wait(run, &res); err != nil {
			t.Fatalf("backup: %v\n%s", err, s.logs.Tail(4000))
		}
		if got, want := logged(), "create snapshot-create\nremove snapshot-remove 1\n"; got != want {
			t.Fatalf("snapshot commands ran as\n%s\nwant\n%s", got, want)
		}
		if _, err := os.Stat(snap); !os.IsNotExist(err) {
			t.Fatalf("the snapshot is still there after the backup: %v", err)
		}
		// The activities in the order the workflow scheduled them.
		var acts []string
		it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		for it.HasNext() {
			ev, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
				acts = append(acts, a.GetActivityType().GetName())
			}
		}
		i := slices.Index(acts, "SourceSnapshot")
		if i < 0 || !slices.Equal(acts[i:], []string{"SourceSnapshot", "Snapshot", "Upload", "Commit", "SourceSnapshot"}) {
			t.Fatalf("activities ran as %v; want create, the listing, the upload, the commit, then remove", acts)
		}
		to := filepath.Join(s.dir, "restored")
		s.restore("primary", to)
		if b, err := os.ReadFile(filepath.Join(to, "snapshot.txt")); err != nil || string(b) != "made by the snapshot\n" {
			t.Fatalf("the restore point lacks what only the snapshot held: %q, %v", b, err)
		}
		if b, err := os.ReadFile(filepath.Join(to, "data.txt")); err != nil || string(b) != "data" {
			t.Fatalf("data.txt restored as %q, %v", b, err)
		}
	})

	t.Run("failing backup", func(t *testing.T) {
		// The snapshot is a symlink, which the dir source never follows:
		// the listing fails (permanently), and the snapshot is still
		// removed, told the backup failed.
		write("link", "")
		defer os.Remove(filepath.Join(scripts, "link"))
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		if err == nil || !strings.Contains(err.Error(), "is a symbolic link") || !strings.Contains(err.Error(), snap) {
			t.Fatalf("err = %v, want the snapshot path named as a symlink", err)
		}
		if _, err := os.Lstat(snap); !os.IsNotExist(err) {
			t.Fatalf("the snapshot is still there after the failed backup: %v", err)
		}
		if got, want := logged(), "create snapshot-create\nremove snapshot-remove 0\n"; got != want {
			t.Fatalf("snapshot commands ran as\n%s\nwant\n%s", got, want)
		}
		if _, err := os.Stat(snap); !os.IsNotExist(err) {
			t.Fatalf("the snapshot is still there after the failed backup: %v", err)
		}
	})

	t.Run("failing create", func(t *testing.T) {
		write("create.sh", `echo "create $DRORCH_PHASE" >> `+logPath+`
echo "lvcreate: volume group vg0 has insufficient free space" >&2; exit 5`)
		err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
		if err == nil || !strings.Contains(err.Error(), "snapshot create 1") || !strings.Contains(err.Error(), "insufficient free space") {
			t.Fatalf("err = %v, want the create command and its output", err)
		}
		got := logged()
		attempts := strings.Count(got, "create snapshot-create\n")
		if attempts == 0 || !strings.HasSuffix(got, "remove snapshot-remove 0\n") || strings.Count(got, "remove") < attempts {
			t.Fatalf("snapshot commands ran as\n%s\nwant remove after every failed create", got)
		}
	})
}

// snapshot: reflink on a file system without reflinks fails the backup at
// once with an error naming the file system, the path and where reflinks
// work, and leaves no clone behind; so does a source that is a mount point.
func TestSnapshotReflinkUnsupportedFilesystem(t *testing.T) {
	mnt := testenv.MountTmpfs(t)
	src := filepath.Join(mnt, "data")
	s := newStack(t, stackOptions{primarySource: src, primaryExtra: func(*stack) string { return "snapshot: reflink" }})
	if err := os.WriteFile(filepath.Join(src, "data.txt"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.startWorker()
	err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
	if err == nil {
		t.Fatal("a reflink backup on tmpfs passed")
	}
	for _, want := range []string{"tmpfs", filepath.Join(src, "data.txt"), "cannot make reflink copies", "XFS", "btrfs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !appErr.NonRetryable() || appErr.Type() != "NoReflink" {
		t.Errorf("the error is not a permanent NoReflink error: %#v", appErr)
	}
	if left := clones(t, mnt); len(left) != 0 {
		t.Fatalf("clones left after the failed backup: %v", left)
	}

	// A source that is a mount point has no room beside it on its file
	// system: the error says so and what to configure instead.
	root := newStack(t, stackOptions{primarySource: mnt, primaryExtra: func(*stack) string { return "snapshot: reflink" }})
	root.startWorker()
	err = root.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
	if err == nil || !strings.Contains(err.Error(), "is the root of a tmpfs file system (a mount point)") || !strings.Contains(err.Error(), filepath.Join(mnt, "data")) {
		t.Fatalf("err = %v, want the mount point named and a directory below it offered", err)
	}
}
