package testenv

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a MinIO server started for one test.
type MinIO struct {
	Endpoint  string // 127.0.0.1:port, or the NetNS's Addr():port (StartMinIOIn)
	AccessKey string // root credentials, random per server
	SecretKey string
	Dir       string // data directory; survives Stop/Start and Kill/Start
	CAFile    string // PEM certificate to trust when serving HTTPS (StartMinIOTLS); "" for plain HTTP

	bin         string
	consoleAddr string
	logPath     string
	netns       *NetNS // nil for the test's network namespace
	proc        *process
}

const (
	minioReadyTimeout = 90 * time.Second // two shared cores, a cold page cache
	minioStopGrace    = 10 * time.Second
)

// StartMinIO starts a fresh MinIO server with its data in a temporary directory,
// listening on free loopback ports, and waits until it is ready. The server is
// stopped when the test ends. Its output goes to a log file next to the data;
// when the test fails, the tail of that log is reported.
func StartMinIO(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, false, nil)
}

// StartMinIOIn is StartMinIO with the server inside ns, listening on ns.Addr():
// cutting ns cuts the test off from it.
func StartMinIOIn(t testing.TB, ns *NetNS) *MinIO {
	t.Helper()
	return startMinIO(t, false, ns)
}

// StartMinIOTLS is StartMinIO serving HTTPS with a fresh self-signed
// certificate for 127.0.0.1, which CAFile holds.
func StartMinIOTLS(t testing.TB) *MinIO {
	t.Helper()
	return startMinIO(t, true, nil)
}

func startMinIO(t testing.TB, withTLS bool, netns *NetNS) *MinIO {
	t.Helper()
	m, err := newMinIO(Tool(t, "minio"), t.TempDir(), withTLS, netns)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: minio at %s, log %s; tail:\n%s", m.Endpoint, m.logPath, m.proc.logTail(2048))
		}
		m.proc.stop(syscall.SIGTERM, minioStopGrace)
	})
	return m
}

// StartMinIOServer is StartMinIO for programs that are not tests (the bench
// command): the server keeps its data and log in dir, and the caller stops it
// with Close. It still dies with the calling process.
func StartMinIOServer(dir string) (*MinIO, error) {
	bin, err := ToolPath("minio")
	if err != nil {
		return nil, err
	}
	return newMinIO(bin, dir, false, nil)
}

// StartMinIOTLSServer is StartMinIOServer serving HTTPS, as StartMinIOTLS.
func StartMinIOTLSServer(dir string) (*MinIO, error) {
	bin, err := ToolPath("minio")
	if err != nil {
		return nil, err
	}
	return newMinIO(bin, dir, true, nil)
}

// Close stops a server started by StartMinIOServer, as Stop does.
func (m *MinIO) Close() { m.proc.stop(syscall.SIGTERM, minioStopGrace) }

// newMinIO starts a server in netns, or on the loopback when netns is nil. The
// TLS certificate is for 127.0.0.1 only.
func newMinIO(bin, root string, withTLS bool, netns *NetNS) (*MinIO, error) {
	m := &MinIO{
		AccessKey: "drorch-root",
		SecretKey: randomHex(20),
		Dir:       filepath.Join(root, "data"),
		bin:       bin,
		logPath:   filepath.Join(root, "minio.log"),
		netns:     netns,
	}
	if err := os.MkdirAll(m.Dir, 0o755); err != nil {
		return nil, err
	}
	if withTLS {
		m.CAFile = filepath.Join(root, "ca.pem")
		if err := writeCert(m.certsDir(), m.CAFile); err != nil {
			return nil, fmt.Errorf("minio certificate: %w", err)
		}
	}
	// A port can be taken between choosing it and the server binding it: try
	// once more on new ports before giving up.
	host := listenHost(netns)
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var ports []int
		if ports, err = listenPorts(netns, 2); err != nil {
			break
		}
		m.Endpoint = net.JoinHostPort(host, strconv.Itoa(ports[0]))
		m.consoleAddr = net.JoinHostPort(host, strconv.Itoa(ports[1]))
		err = m.start()
		if err == nil || m.proc == nil || !m.proc.addrInUse() {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// start runs the server on m's ports and data directory and waits for it to be
// ready. On failure the process is gone and the error carries the log tail.
func (m *MinIO) start() error {
	args := []string{"server",
		"--address", m.Endpoint,
		"--console-address", m.consoleAddr,
		"--certs-dir", m.certsDir(), // MinIO serves HTTPS when it finds public.crt and private.key there
		"--quiet",
		m.Dir,
	}
	env := environ([]string{"MINIO_"},
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_UPDATE=off",
		"MINIO_CALLHOME_ENABLE=off",
	)
	p, err := startCommand(command{name: "minio", bin: m.bin, args: args, env: env, logPath: m.logPath, netns: m.netns})
	if err != nil {
		return err
	}
	m.proc = p
	if err := m.waitReady(minioReadyTimeout); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("minio at %s: %w (%s); log %s ends with:\n%s", m.Endpoint, err, p.status(), m.logPath, p.logTail(4096))
	}
	return nil
}

func (m *MinIO) certsDir() string { return filepath.Join(filepath.Dir(m.Dir), "certs") }

// transport trusts the server's certificate when it serves HTTPS.
func (m *MinIO) transport() (*http.Transport, error) {
	tr, err := minio.DefaultTransport(m.CAFile != "")
	if err != nil || m.CAFile == "" {
		return tr, err
	}
	pem, err := os.ReadFile(m.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr.TLSClientConfig.RootCAs = pool
	return tr, nil
}

func (m *MinIO) url() string {
	if m.CAFile != "" {
		return "https://" + m.Endpoint
	}
	return "http://" + m.Endpoint
}

// answers reports whether GET url answers with status.
func answers(hc *http.Client, url string, status int) bool {
	resp, err := hc.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == status
}

// waitReady waits until the health check says ready and the S3 API itself
// answers: the health check can pass while S3 requests still get 503
// XMinioServerNotInitialized; an anonymous ListBuckets gets 403 once they
// no longer do.
func (m *MinIO) waitReady(timeout time.Duration) error {
	url := m.url() + "/minio/health/ready"
	tr, err := m.transport()
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(timeout)
	for {
		if m.proc.exited() {
			return errExited
		}
		if answers(hc, url, http.StatusOK) && answers(hc, m.url()+"/", http.StatusForbidden) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server gracefully (SIGTERM, then SIGKILL after a grace period)
// and waits for it to exit. Start brings it back with the same data.
func (m *MinIO) Stop(t testing.TB) {
	t.Helper()
	m.proc.stop(syscall.SIGTERM, minioStopGrace)
}

// Pause freezes the server (SIGSTOP): connections stay open and requests
// hang until Resume, as with a store that stopped answering. Resume is
// registered as a cleanup, so a failed test does not leave it frozen.
func (m *MinIO) Pause(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(-m.proc.cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("testenv: pause minio at %s: %v", m.Endpoint, err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-m.proc.cmd.Process.Pid, syscall.SIGCONT) })
}

// Resume lets a paused server go on (SIGCONT).
func (m *MinIO) Resume(t testing.TB) {
	t.Helper()
	if err := syscall.Kill(-m.proc.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatalf("testenv: resume minio at %s: %v", m.Endpoint, err)
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (m *MinIO) Kill(t testing.TB) {
	t.Helper()
	m.proc.stop(syscall.SIGKILL, minioStopGrace)
}

// Start restarts a stopped server on the same port and data directory.
func (m *MinIO) Start(t testing.TB) {
	t.Helper()
	if !m.proc.exited() {
		t.Fatalf("testenv: minio at %s is already running", m.Endpoint)
	}
	if err := m.start(); err != nil {
		t.Fatalf("testenv: restart: %v", err)
	}
}

// Client returns a client with the root credentials.
func (m *MinIO) Client(t testing.TB) *minio.Client {
	t.Helper()
	tr, err := m.transport()
	if err != nil {
		t.Fatalf("testenv: minio client: %v", err)
	}
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure:       m.CAFile != "",
		Transport:    tr,
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
	if err != nil {
		t.Fatalf("testenv: minio client: %v", err)
	}
	return c
}

// AddUser adds a user whose only permissions are those of policyJSON (an IAM
// policy document), attached as a canned policy named after the user. An empty
// policy leaves the user with no permissions at all.
func (m *MinIO) AddUser(t testing.TB, accessKey, secretKey, policyJSON string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.addUser(ctx, accessKey, secretKey, policyJSON); err != nil {
		t.Fatalf("testenv: minio add user %s: %v", accessKey, err)
	}
}

func (m *MinIO) addUser(ctx context.Context, accessKey, secretKey, policyJSON string) error {
	tr, err := m.transport()
	if err != nil {
		return err
	}
	adm, err := madmin.NewWithOptions(m.Endpoint, &madmin.Options{
		Creds:     credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure:    m.CAFile != "",
		Transport: tr,
	})
	if err != nil {
		return err
	}
	if err := adm.AddUser(ctx, accessKey, secretKey); err != nil {
		return fmt.Errorf("add user: %w", err)
	}
	if policyJSON == "" {
		return nil
	}
	name := "testenv-" + accessKey
	if err := adm.AddCannedPolicy(ctx, name, []byte(policyJSON)); err != nil {
		return fmt.Errorf("add policy: %w", err)
	}
	if _, err := adm.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{name}, User: accessKey}); err != nil {
		return fmt.Errorf("attach policy: %w", err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(errors.New("testenv: no randomness: " + err.Error()))
	}
	return hex.EncodeToString(b)
}
