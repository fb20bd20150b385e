package main

// The PostgreSQL rows: drorch's postgres source against pgBackRest on one
// pgbench database, both writing to the same MinIO over HTTPS, and the lag
// of WAL shipping to the secondary under load.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

const (
	pgPlan    = "pg"
	pgStanza  = "bench"
	pgBinDir  = "/usr/lib/postgresql/15/bin"
	pgTx      = 20000 // transactions of each pgbench run (4 clients)
	pgLagTime = 30 * time.Second
	// pgDefaultScale makes a database of about 1 GiB (15 MiB per unit).
	pgDefaultScale = 70
)

// pgBench is the PostgreSQL set-up: one primary cluster, one TLS MinIO with
// a bucket per drorch site and one for pgBackRest, a worker of its own.
type pgBench struct {
	e            *env // Temporal of the main bench; its own worker and queue
	dir          string
	minio        *testenv.MinIO
	pg           *testenv.Postgres
	cred         *syscall.Credential // the user postgres when the bench runs as root
	bin          string              // drorch-worker, where postgres can run it
	cfg          string              // drorch config, secrets in files postgres can read
	brConf       string              // pgbackrest.conf
	secDir       string              // drorch restores here (the secondary's data directory)
	secPort      int
	brDir        string // pgBackRest restores here
	brPort       int
	scale        int
	dbSize       int64
	cpus         int
	walEnv       []string
	pushBoth     string          // archive_command: both tools
	pushBackRest string          // archive_command: pgBackRest only
	cpu          []time.Duration // CPU time of the backups, in the order they ran
	pushOne      string          // archive_command: drorch wal-push to the primary's repository only
}

func pgRows(ctx context.Context, main *env, workerBin string) error {
	scale := pgDefaultScale
	if s := os.Getenv("DRORCH_BENCH_PG_SCALE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return fmt.Errorf("DRORCH_BENCH_PG_SCALE=%q: want a pgbench scale, a positive integer", s)
		}
		scale = n
	}
	if _, err := exec.LookPath("pgbackrest"); err != nil {
		return fmt.Errorf("pgbackrest not found (go tool task tools:debian installs it), or skip these rows with DRORCH_BENCH_PG=0: %w", err)
	}
	b := &pgBench{scale: scale, cpus: runtime.NumCPU()}
	if err := b.setup(main, workerBin); err != nil {
		return err
	}
	return b.run(ctx)
}

// setup starts the servers in a directory the user postgres can read, and
// writes the configs of both tools.
func (b *pgBench) setup(main *env, workerBin string) error {
	var err error
	if b.dir, err = os.MkdirTemp("", "drorch-bench-pg-"); err != nil {
		return err
	}
	atExit(func() { os.RemoveAll(b.dir) })
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root, PostgreSQL and pgBackRest run as the user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		b.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	logf("postgres: starting a MinIO with TLS and PostgreSQL 15…")
	if b.minio, err = testenv.StartMinIOTLSServer(filepath.Join(b.dir, "minio")); err != nil {
		return err
	}
	atExit(b.minio.Close)
	if b.pg, err = testenv.StartPostgresServer("archive_mode=on", "max_wal_size=4GB", "wal_compression=off"); err != nil {
		return err
	}
	atExit(b.pg.Close)
	if err := b.bucket("pgbackrest"); err != nil {
		return err
	}

	// Files postgres reads: the worker binary (wal-push), the CA, secrets.
	b.bin = filepath.Join(b.dir, "drorch-worker")
	key := randomHex(32)
	files := map[string]string{"access": b.minio.AccessKey, "secret": b.minio.SecretKey, "pgpass": b.pg.Password, "key": key}
	ca, err := os.ReadFile(b.minio.CAFile)
	if err != nil {
		return err
	}
	files["ca.pem"] = string(ca)
	for name, text := range files {
		if err := b.write(name, text, 0o600); err != nil {
			return err
		}
	}
	bin, err := os.ReadFile(workerBin)
	if err != nil {
		return err
	}
	if err := os.WriteFile(b.bin, bin, 0o755); err != nil {
		return err
	}
	b.secDir, b.brDir = filepath.Join(b.dir, "secondary", "data"), filepath.Join(b.dir, "pgbackrest", "data")
	for _, d := range []string{b.secDir, b.brDir, filepath.Join(b.dir, "pgbackrest", "log"), filepath.Join(b.dir, "pgbackrest", "lock"), filepath.Join(b.dir, "pgbackrest", "spool")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := b.chown(d); err != nil {
			return err
		}
		if err := b.chown(filepath.Dir(d)); err != nil {
			return err
		}
	}
	// drorch's restore starts a server in secDir: stop it before the
	// directory is removed, whatever step failed.
	atExit(func() { b.pgCtl(b.secDir, "stop", "-m", "immediate") })
	if b.secPort, err = freePort(); err != nil {
		return err
	}
	if b.brPort, err = freePort(); err != nil {
		return err
	}

	if err := b.configs(); err != nil {
		return err
	}

	// The worker of these rows: its own config and queue, the same Temporal.
	e := &env{temporal: main.temporal, tc: main.tc, minio: map[string]*testenv.MinIO{"primary": b.minio}, queue: "bench-pg-" + randomHex(4)}
	e.workLog = filepath.Join(b.dir, "worker.log")
	if e.worker, err = startWorker(b.bin, b.cfg, e.queue, main.temporal, os.Environ(), e.workLog); err != nil {
		return err
	}
	b.e = e
	return nil
}

// configs writes drorch's config (secrets in files), pgbackrest.conf and
// the archive commands.
func (b *pgBench) configs() error {
	f := func(name string) string { return "file:" + filepath.Join(b.dir, name) }
	var cfg strings.Builder
	cfg.WriteString("sites:\n")
	for _, site := range []string{"primary", "secondary"} {
		fmt.Fprintf(&cfg, "  %s:\n    store: {driver: s3, endpoint: %s, bucket: drorch-%s, accessKey: %s, secretKey: %s, caFile: %s}\n",
			site, b.minio.Endpoint, site, f("access"), f("secret"), filepath.Join(b.dir, "ca.pem"))
	}
	fmt.Fprintf(&cfg, "plans:\n  %s:\n    primary: primary\n    secondary: secondary\n    source:\n", pgPlan)
	fmt.Fprintf(&cfg, "      primary: {driver: postgres, path: %s, host: %s, port: %d, user: %s, password: %s, sslmode: disable}\n",
		b.pg.Dir, b.pg.Host, b.pg.Port, b.pg.User, f("pgpass"))
	fmt.Fprintf(&cfg, "      secondary: {driver: postgres, path: %s, host: 127.0.0.1, port: %d, user: %s, password: %s, sslmode: disable, startTimeout: 1h, options: \"-k %s -c listen_addresses=127.0.0.1\"}\n",
		b.secDir, b.secPort, b.pg.User, f("pgpass"), filepath.Dir(b.secDir))
	fmt.Fprintf(&cfg, "    encryption: {key: %s}\n    wal: {ship: \"on\", shipEvery: 1s}\n", f("key"))
	if err := b.write("drorch.yaml", cfg.String(), 0o600); err != nil {
		return err
	}
	b.cfg = filepath.Join(b.dir, "drorch.yaml")

	// pgBackRest 2.45 matches only DNS names of the certificate, and the
	// bench's is for 127.0.0.1: it uses TLS without checking the certificate.
	br := filepath.Join(b.dir, "pgbackrest")
	host, port, _ := net.SplitHostPort(b.minio.Endpoint)
	conf := fmt.Sprintf(`[global]
repo1-type=s3
repo1-path=/repo
repo1-s3-bucket=pgbackrest
repo1-s3-endpoint=%s
repo1-storage-port=%s
repo1-storage-verify-tls=n
repo1-s3-uri-style=path
repo1-s3-region=us-east-1
repo1-s3-key=%s
repo1-s3-key-secret=%s
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=%s
repo1-retention-full=4
compress-type=zst
compress-level=1
process-max=%d
start-fast=y
archive-timeout=300
log-path=%s/log
lock-path=%s/lock
spool-path=%s/spool
log-level-console=warn
log-level-file=info

[%s]
pg1-path=%s
pg1-port=%d
pg1-socket-path=%s
pg1-user=%s
`, host, port, b.minio.AccessKey, b.minio.SecretKey, randomHex(32), b.cpus,
		br, br, br, pgStanza, b.pg.Dir, b.pg.Port, b.pg.SocketDir(), b.pg.User)
	if err := b.write("pgbackrest.conf", conf, 0o600); err != nil {
		return err
	}
	b.brConf = filepath.Join(b.dir, "pgbackrest.conf")

	push := func(site string) string {
		return fmt.Sprintf("%s wal-push --plan %s --site %s --config %s %%p", b.bin, pgPlan, site, b.cfg)
	}
	// Both drorch sites get every segment directly (the restore at the
	// secondary replays them without waiting for shipping), and pgBackRest.
	b.pushBackRest = fmt.Sprintf("pgbackrest --config=%s --stanza=%s archive-push %%p", b.brConf, pgStanza)
	b.pushBoth = fmt.Sprintf("%s && %s && %s", push("primary"), push("secondary"), b.pushBackRest)
	b.pushOne = push("primary")
	return nil
}

func (b *pgBench) run(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.pg.DSN())
	if err != nil {
		return fmt.Errorf("connect to the primary: %w", err)
	}
	defer conn.Close(ctx)
	if out, err := b.pgbackrest("stanza-create"); err != nil {
		return fmt.Errorf("pgbackrest stanza-create: %w\n%s", err, out)
	}
	// pgbench -i's WAL is not needed by any backup: archive it nowhere.
	if err := b.archiveCommand(ctx, conn, "true", "0"); err != nil {
		return err
	}
	logf("postgres: pgbench -i -s %d…", b.scale)
	if out, err := b.pgbench("-i", "-q", "-s", strconv.Itoa(b.scale)); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	if err := conn.QueryRow(ctx, "SELECT sum(pg_database_size(datname))::bigint FROM pg_database").Scan(&b.dbSize); err != nil {
		return err
	}
	logf("postgres: cluster of %s", human(b.dbSize))
	if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
		return err
	}
	if err := b.archiveCommand(ctx, conn, b.pushBoth, "0"); err != nil {
		return err
	}
	if out, err := b.pgbackrest("check"); err != nil {
		return fmt.Errorf("pgbackrest check: %w\n%s", err, out)
	}

	// pgBackRest's backups wait until their last WAL segment is archived:
	// while they run, archive_command is pgBackRest's alone, so that they do
	// not wait for drorch's pushes too. drorch's backups come after them and
	// need no archived WAL (the base backup holds its own), and from then on
	// both archives get every segment, which both restores replay.
	var full, incr workflows.BackupResult
	bFull, err := b.pgbackrestBackup(ctx, conn, "full")
	if err != nil {
		return err
	}
	dFull, err := b.drorchBackup(ctx, "full", &full)
	if err != nil {
		return err
	}
	logf("postgres: pgbench, %d transactions…", pgTx)
	if out, err := b.pgbench("-n", "-c", "4", "-j", "2", "-t", strconv.Itoa(pgTx/4)); err != nil {
		return fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	bIncr, err := b.pgbackrestBackup(ctx, conn, "incr")
	if err != nil {
		return err
	}
	dIncr, err := b.drorchBackup(ctx, "incremental", &incr)
	if err != nil {
		return err
	}

	// The WAL both restores replay: another run after both backups.
	logf("postgres: pgbench, %d transactions for the restores to replay…", pgTx)
	if out, err := b.pgbench("-n", "-c", "4", "-j", "2", "-t", strconv.Itoa(pgTx/4)); err != nil {
		return fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	if err := switchWAL(ctx, conn); err != nil {
		return err
	}
	var tr workflows.TransmitResult
	trDur, err := b.e.execute(ctx, "postgres: transmit primary → secondary", workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: pgPlan, From: "primary", To: "secondary"}, &tr)
	if err != nil {
		return err
	}
	var rs workflows.RestoreResult
	dRestore, err := b.e.execute(ctx, "postgres: drorch restore at the secondary (write, start, recover, promote)", workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: pgPlan, Site: "secondary"}, &rs)
	if err != nil {
		return err
	}
	b.pgCtl(b.secDir, "stop", "-m", "fast")
	bRestore, err := b.pgbackrestRestore(ctx)
	if err != nil {
		return err
	}
	var rec [2]time.Duration
	for i, log := range []string{b.secDir + ".log", b.brDir + ".log"} {
		if rec[i], err = recoverySpan(log); err != nil {
			return err
		}
	}

	fetch, err := b.fetchOne(ctx)
	if err != nil {
		return err
	}
	lags, err := b.walLag(ctx, conn)
	if err != nil {
		return err
	}
	return b.print(full, incr, tr, rs, [][2]time.Duration{{dFull, bFull}, {dIncr, bIncr}, {dRestore, bRestore}}, trDur, lags, rec, fetch)
}

func (b *pgBench) print(full, incr workflows.BackupResult, tr workflows.TransmitResult, rs workflows.RestoreResult, d [][2]time.Duration, trDur time.Duration, lags walLag, rec, fetch [2]time.Duration) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nPostgreSQL 15: pgbench scale %d, cluster %s, %d CPUs, runs of %d transactions; both to one MinIO over HTTPS, encrypted\n", b.scale, human(b.dbSize), b.cpus, pgTx)
	fmt.Fprintf(w, "drorch: zstd fastest, AES-256-GCM; pgBackRest 2.45: compress-type=zst compress-level=1, aes-256-cbc, process-max=%d\n\n", b.cpus)
	fmt.Fprintln(w, "measure\tdrorch\tpgBackRest\tdrorch/pgBackRest\ttarget\t")
	row := func(name, dr, br string, ratio float64) {
		status := map[bool]string{true: "ok", false: "MISSED"}[ratio <= 1]
		fmt.Fprintf(w, "%s\t%s\t%s\t%.2f×\t≤ 1×\t%s\n", name, dr, br, ratio, status)
	}
	ratio := func(i int) float64 { return float64(d[i][0]) / float64(d[i][1]) }
	cpu := func(i int) string { // b.cpu: pgBackRest full, drorch full, pgBackRest incr, drorch incr
		if i < len(b.cpu) {
			return dur(b.cpu[i])
		}
		return "?"
	}
	row("full backup", fmt.Sprintf("%s (%s read, %s stored, CPU %s)", dur(d[0][0]), human(full.BytesRead), human(full.Uploaded), cpu(1)), fmt.Sprintf("%s (CPU %s)", dur(d[0][1]), cpu(0)), ratio(0))
	row(fmt.Sprintf("incremental after %d tx", pgTx), fmt.Sprintf("%s (%s read, %s stored, CPU %s)", dur(d[1][0]), human(incr.BytesRead), human(incr.Uploaded), cpu(3)), fmt.Sprintf("%s (CPU %s)", dur(d[1][1]), cpu(2)), ratio(1))
	row(fmt.Sprintf("restore + replay of %d tx", pgTx), fmt.Sprintf("%s (server start to ready %s)", dur(d[2][0]), dur(rec[0])), fmt.Sprintf("%s (%s)", dur(d[2][1]), dur(rec[1])), ratio(2))
	fmt.Fprintf(w, "fetch one WAL segment (median of 5)\t%s\t%s\t%.2f×\t\t\n", dur(fetch[0]), dur(fetch[1]), float64(fetch[0])/float64(fetch[1]))
	fmt.Fprintf(w, "transmit primary → secondary\t%s (%d chunks copied)\t–\t\t\t\n", dur(trDur), tr.ChunksCopied)
	lagRow := func(name string, lags []time.Duration, missing int) {
		if len(lags) == 0 {
			fmt.Fprintf(w, "%s\tnone measured\t\t\t< 10 s\tMISSED\n", name)
			return
		}
		slices.Sort(lags)
		med, mx := lags[len(lags)/2], lags[len(lags)-1]
		ok := map[bool]string{true: "ok", false: "MISSED"}[mx < 10*time.Second && missing == 0]
		extra := ""
		if missing > 0 {
			extra = fmt.Sprintf(", %d not shipped", missing)
		}
		fmt.Fprintf(w, "%s\tmedian %s, max %s%s\t\t\t< 10 s\t%s\n", name, dur(med), dur(mx), extra, ok)
	}
	lagRow(fmt.Sprintf("WAL lag, wal query (%d samples)", len(lags.query)), lags.query, 0)
	lagRow(fmt.Sprintf("WAL lag, per file (%d files)", len(lags.files)+lags.missing), lags.files, lags.missing)
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println("\nrestore: both write an empty data directory, start the server, replay the WAL archived after their last backup to its end and")
	fmt.Println("promote; timed until the server is out of recovery. In brackets: server start to ready, from the server's log (WAL fetch and replay).")
	fmt.Println("CPU: of the drorch worker with its pg_basebackup, and of pgbackrest with its processes; neither counts PostgreSQL's nor MinIO's.")
	fmt.Println("WAL lag: archive_timeout 1s, pgbench -c 2 for 30s, ShipWAL every 1s. Per file: MinIO's time of the object at the primary to at the secondary.")
	return nil
}

// drorchBackup runs the Backup workflow of the postgres plan.
func (b *pgBench) drorchBackup(ctx context.Context, what string, res *workflows.BackupResult) (time.Duration, error) {
	cpu := procCPU(b.e.worker.Process.Pid)
	d, err := b.e.execute(ctx, "postgres: drorch "+what+" backup", workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: pgPlan}, res)
	if err == nil {
		b.cpu = append(b.cpu, procCPU(b.e.worker.Process.Pid)-cpu)
		logf("postgres: drorch %s backup: CPU %s (worker and pg_basebackup)", what, dur(b.cpu[len(b.cpu)-1]))
	}
	return d, err
}

// procCPU is the CPU time a process and its waited-for children used
// (/proc/PID/stat utime, stime, cutime, cstime).
func procCPU(pid int) time.Duration {
	text, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(text[strings.LastIndexByte(string(text), ')')+1:]))
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14 to 17 of proc(5)
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
}

// pgbackrestBackup runs a pgBackRest backup of type typ with its own
// archive_command, then archives into both again.
func (b *pgBench) pgbackrestBackup(ctx context.Context, conn *pgx.Conn, typ string) (time.Duration, error) {
	if err := b.archiveCommand(ctx, conn, b.pushBackRest, "0"); err != nil {
		return 0, err
	}
	d, err := b.timed("pgbackrest backup --type="+typ, "backup", "--type="+typ)
	if err != nil {
		return 0, err
	}
	return d, b.archiveCommand(ctx, conn, b.pushBoth, "0")
}

// timed runs pgbackrest with args and returns its wall time.
func (b *pgBench) timed(what string, args ...string) (time.Duration, error) {
	logf("postgres: %s…", what)
	syscall.Sync()
	start := time.Now()
	out, err := b.pgbackrest(args...)
	if err != nil {
		return 0, fmt.Errorf("%s: %w\n%s", what, err, out)
	}
	d := time.Since(start)
	logf("postgres: %s: %s", what, dur(d))
	return d, nil
}

// pgbackrest runs pgbackrest as the user postgres with the bench's config.
// Backups add their CPU time (with their local processes) to b.cpu.
func (b *pgBench) pgbackrest(args ...string) ([]byte, error) {
	cmd := exec.Command("pgbackrest", append([]string{"--config=" + b.brConf, "--stanza=" + pgStanza}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
	cmd.Dir = b.dir
	out, err := cmd.CombinedOutput()
	if err == nil && args[0] == "backup" {
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		b.cpu = append(b.cpu, cpu)
		logf("postgres: pgbackrest %s: CPU %s", strings.Join(args, " "), dur(cpu))
	}
	return out, err
}

// pgbackrestRestore restores the newest backup into an empty directory,
// starts the server and waits until it has replayed the archive and left
// recovery, as drorch's restore with afterRestore: start does.
func (b *pgBench) pgbackrestRestore(ctx context.Context) (time.Duration, error) {
	logf("postgres: pgbackrest restore, start, recover, promote…")
	syscall.Sync()
	start := time.Now()
	if out, err := b.pgbackrest("restore", "--pg1-path="+b.brDir, "--archive-mode=off"); err != nil {
		return 0, fmt.Errorf("pgbackrest restore: %w\n%s", err, out)
	}
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c archive_mode=off", b.brPort, filepath.Dir(b.brDir))
	if out, err := b.pgCtl(b.brDir, "start", "-w", "-t", "3600", "-l", b.brDir+".log", "-o", opts); err != nil {
		log, _ := os.ReadFile(b.brDir + ".log")
		return 0, fmt.Errorf("start the server pgBackRest restored: %w\n%s\n%s", err, out, log)
	}
	atExit(func() { b.pgCtl(b.brDir, "stop", "-m", "immediate") })
	dsn := strings.Replace(b.pg.DSN(), fmt.Sprintf(":%d/", b.pg.Port), fmt.Sprintf(":%d/", b.brPort), 1)
	for {
		var rec bool
		c, err := pgx.Connect(ctx, dsn)
		if err == nil {
			err = c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
			c.Close(ctx)
		}
		if err == nil && !rec {
			break
		}
		if time.Since(start) > time.Hour {
			return 0, fmt.Errorf("the server pgBackRest restored is still in recovery after an hour (%v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := time.Since(start)
	logf("postgres: pgbackrest restore: %s", dur(d))
	b.pgCtl(b.brDir, "stop", "-m", "fast")
	return d, nil
}

// fetchOne times what a recovery runs per WAL segment: drorch-worker
// wal-fetch and pgbackrest archive-get of the same segment, as the user
// postgres, median of 5 runs each.
func (b *pgBench) fetchOne(ctx context.Context) ([2]time.Duration, error) {
	var res [2]time.Duration
	names, err := b.walTimes(ctx, "secondary")
	if err != nil {
		return res, err
	}
	var seg string
	for name := range names {
		if len(name) == 24 && name > seg {
			seg = name
		}
	}
	if seg == "" {
		return res, fmt.Errorf("no WAL segment at the secondary")
	}
	dest := filepath.Join(filepath.Dir(b.brDir), "fetched")
	cmds := [2][]string{
		{b.bin, "wal-fetch", "--plan", pgPlan, "--site", "secondary", "--config", b.cfg, seg, dest},
		{"pgbackrest", "--config=" + b.brConf, "--stanza=" + pgStanza, "archive-get", seg, dest},
	}
	for i, args := range cmds {
		var ds []time.Duration
		for range 5 {
			os.Remove(dest)
			cmd := exec.Command(args[0], args[1:]...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
			cmd.Dir = b.dir
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return res, fmt.Errorf("%s: %w\n%s", strings.Join(args[:2], " "), err, out)
			}
			ds = append(ds, time.Since(start))
		}
		slices.Sort(ds)
		res[i] = ds[2]
	}
	os.Remove(dest)
	logf("postgres: fetch one WAL segment: wal-fetch %s, archive-get %s", dur(res[0]), dur(res[1]))
	return res, nil
}

// walLag is what WAL shipping measured under load.
type walLag struct {
	query   []time.Duration // the wal query's lag of the secondary, sampled
	files   []time.Duration // per file: stored at the primary → stored at the secondary
	missing int             // files archived in the window and not at the secondary 30 s after
}

// walLag ships WAL to the secondary under pgbench load with archive_timeout
// 1s: the wal query's lag, sampled every 500 ms, and for every file archived
// meanwhile the time from its arrival in the primary's repository to its
// arrival in the secondary's (MinIO's times of both objects).
func (b *pgBench) walLag(ctx context.Context, conn *pgx.Conn) (walLag, error) {
	var res walLag
	if err := b.archiveCommand(ctx, conn, b.pushOne, "1s"); err != nil {
		return res, err
	}
	logf("postgres: WAL shipping under pgbench for %s…", pgLagTime)
	run, err := b.e.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                    workflows.WALShipID(pgPlan),
		TaskQueue:             b.e.queue,
		TypedSearchAttributes: workflows.Attributes(pgPlan, "", workflows.OpWAL),
	}, workflows.ShipWAL, workflows.ShipWALInput{Plan: pgPlan})
	if err != nil {
		return res, fmt.Errorf("start ShipWAL: %w", err)
	}
	defer b.e.tc.TerminateWorkflow(context.Background(), run.GetID(), "", "bench over")
	from := time.Now()
	load := exec.Command(filepath.Join(pgBinDir, "pgbench"), "-n", "-c", "2", "-T", strconv.Itoa(int(pgLagTime.Seconds())), "-h", b.pg.SocketDir(), "-p", strconv.Itoa(b.pg.Port), "-U", b.pg.User, b.pg.Database)
	load.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
	if err := load.Start(); err != nil {
		return res, err
	}
	done := make(chan struct{})
	go func() { _ = load.Wait(); close(done) }()
	var lastErr string
	for tick := time.NewTicker(500 * time.Millisecond); ; {
		select {
		case <-done:
			tick.Stop()
		case <-tick.C:
		}
		var st workflows.WALStatus
		if v, err := b.e.tc.QueryWorkflow(ctx, run.GetID(), "", workflows.QueryWAL); err == nil && v.Get(&st) == nil && len(st.Standbys) == 1 && st.Round > 1 {
			sb := st.Standbys[0]
			lag := sb.Lag.D()
			if !sb.Behind.IsZero() {
				lag = max(lag, time.Since(sb.Behind)) // files missing at the last round are older now
			}
			res.query = append(res.query, lag)
			if sb.Error != "" {
				lastErr = sb.Error
			}
		}
		select {
		case <-done:
		default:
			continue
		}
		break
	}
	if lastErr != "" {
		logf("postgres: a shipping round failed: %s", lastErr)
	}
	if err := switchWAL(ctx, conn); err != nil {
		return res, err
	}
	var pri, sec map[string]time.Time
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if pri, err = b.walTimes(ctx, "primary"); err != nil {
			return res, err
		}
		if sec, err = b.walTimes(ctx, "secondary"); err != nil {
			return res, err
		}
		res.files, res.missing = res.files[:0], 0
		for name, at := range pri {
			if at.Before(from) {
				continue
			}
			if s, ok := sec[name]; ok {
				res.files = append(res.files, s.Sub(at))
			} else {
				res.missing++
			}
		}
		if res.missing == 0 || time.Now().After(deadline) {
			return res, nil
		}
	}
}

// archiveCommand switches the primary's archive_command and archive_timeout
// with ALTER SYSTEM and a reload.
func (b *pgBench) archiveCommand(ctx context.Context, conn *pgx.Conn, command, timeout string) error {
	for _, q := range []string{
		"ALTER SYSTEM SET archive_command = " + quote(command),
		"ALTER SYSTEM SET archive_timeout = " + quote(timeout),
		"SELECT pg_reload_conf()",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the archiver reads the new settings
	return nil
}

// switchWAL ends the current WAL segment and waits until it is archived.
func switchWAL(ctx context.Context, conn *pgx.Conn) error {
	var name string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var last *string
		if err := conn.QueryRow(ctx, "SELECT last_archived_wal FROM pg_stat_archiver").Scan(&last); err != nil {
			return err
		}
		if last != nil && *last >= name {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("WAL segment %s not archived after 5 minutes (last archived %v)", name, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// pgbench runs pgbench on the primary over its unix socket.
func (b *pgBench) pgbench(args ...string) ([]byte, error) {
	args = append(args, "-h", b.pg.SocketDir(), "-p", strconv.Itoa(b.pg.Port), "-U", b.pg.User, b.pg.Database)
	cmd := exec.Command(filepath.Join(pgBinDir, "pgbench"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
	cmd.Dir = b.dir
	return cmd.CombinedOutput()
}

func (b *pgBench) pgCtl(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(pgBinDir, "pg_ctl"), append([]string{"-D", dir}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: b.cred}
	cmd.Dir = b.dir
	return cmd.CombinedOutput()
}

// write writes a file in the bench's directory that the user postgres owns.
func (b *pgBench) write(name, text string, mode os.FileMode) error {
	p := filepath.Join(b.dir, name)
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		return err
	}
	return b.chown(p)
}

func (b *pgBench) chown(p string) error {
	if b.cred == nil {
		return nil
	}
	return os.Chown(p, int(b.cred.Uid), int(b.cred.Gid))
}

// bucket creates a bucket in the TLS MinIO.
func (b *pgBench) bucket(name string) error {
	mc, err := b.client()
	if err != nil {
		return err
	}
	return mc.MakeBucket(context.Background(), name, minio.MakeBucketOptions{Region: "us-east-1"})
}

func (b *pgBench) client() (*minio.Client, error) {
	pem, err := os.ReadFile(b.minio.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	return minio.New(b.minio.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(b.minio.AccessKey, b.minio.SecretKey, ""),
		Secure:       true,
		Transport:    tr,
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
}

// walTimes lists the plan's WAL objects in a site's bucket with the time
// MinIO stored each.
func (b *pgBench) walTimes(ctx context.Context, site string) (map[string]time.Time, error) {
	mc, err := b.client()
	if err != nil {
		return nil, err
	}
	m := map[string]time.Time{}
	for o := range mc.ListObjects(ctx, "drorch-"+site, minio.ListObjectsOptions{Prefix: pgPlan + "/wal/", Recursive: true}) {
		if o.Err != nil {
			return nil, fmt.Errorf("list WAL at %s: %w", site, o.Err)
		}
		m[strings.TrimPrefix(o.Key, pgPlan+"/wal/")] = o.LastModified
	}
	return m, nil
}

// recoverySpan reads a server log: from the last "starting PostgreSQL" to
// the "ready to accept connections" after it (recovery, then promotion).
func recoverySpan(logPath string) (time.Duration, error) {
	text, err := os.ReadFile(logPath)
	if err != nil {
		return 0, err
	}
	var start, ready time.Time
	for _, line := range strings.Split(string(text), "\n") {
		if len(line) < 23 {
			continue
		}
		at, err := time.Parse("2006-01-02 15:04:05.000", line[:23])
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, "starting PostgreSQL"):
			start, ready = at, time.Time{}
		case strings.Contains(line, "database system is ready to accept connections") && !start.IsZero():
			ready = at
		}
	}
	if start.IsZero() || ready.IsZero() {
		return 0, fmt.Errorf("%s: no start and ready lines", logPath)
	}
	return ready.Sub(start), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
