package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
)

// SearchAttributes are the custom search attributes the dev server is started
// with, by name, and their types.
var SearchAttributes = map[string]string{
	"DrorchPlan": "Keyword", "DrorchSite": "Keyword", "DrorchOperation": "Keyword",
	"DrorchRPOBreached": "Bool",
}

// Temporal is a Temporal dev server (`temporal server start-dev`, in-memory).
type Temporal struct {
	Address   string // frontend gRPC, 127.0.0.1:port
	Namespace string // "default"
	UIAddress string // 127.0.0.1:port when DRORCH_TEMPORAL_UI=1, else "" (headless)

	logPath string
	proc    *process
}

const (
	temporalReadyTimeout = 2 * time.Minute // a 250 MB binary on two shared cores
	temporalStopGrace    = 10 * time.Second
)

// StartTemporal starts a Temporal dev server on free loopback ports with drorch's
// search attributes registered, waits until the "default" namespace answers,
// and stops it when the test ends. Set DRORCH_TEMPORAL_UI=1 to get the Web UI
// (on UIAddress) while debugging a test.
func StartTemporal(t testing.TB) *Temporal {
	t.Helper()
	bin := Tool(t, "temporal")
	s, err := startTemporal(bin, t.TempDir())
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: temporal at %s, log %s; tail:\n%s", s.Address, s.logPath, s.proc.logTail(2048))
		}
		s.proc.stop(syscall.SIGTERM, temporalStopGrace)
	})
	return s
}

// StartTemporalServer is StartTemporal for programs that are not tests (the
// bench command): the log goes to dir, and the caller stops the server with
// Close. It still dies with the calling process.
func StartTemporalServer(dir string) (*Temporal, error) {
	bin, err := ToolPath("temporal")
	if err != nil {
		return nil, err
	}
	return startTemporal(bin, dir)
}

// Close stops a server started by StartTemporalServer.
func (s *Temporal) Close() { s.proc.stop(syscall.SIGTERM, temporalStopGrace) }

var shared struct {
	once sync.Once
	srv  *Temporal
	err  error
}

// SharedTemporal returns one dev server for the whole test binary, started on
// first use. It is never stopped explicitly: it dies with the test process
// (Pdeathsig). Tests sharing it must use unique workflow ids and task queues.
func SharedTemporal(t testing.TB) *Temporal {
	t.Helper()
	bin := Tool(t, "temporal")
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "drorch-testenv-temporal-")
		if err != nil {
			shared.err = err
			return
		}
		// The directory holds only the log; it is left behind on purpose so the
		// log can be read after a failed run.
		shared.srv, shared.err = startTemporal(bin, dir)
	})
	if shared.err != nil {
		t.Fatalf("testenv: shared %v", shared.err)
	}
	return shared.srv
}

func startTemporal(bin, dir string) (*Temporal, error) {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var s *Temporal
		if s, err = startTemporalOnce(bin, dir); err == nil {
			return s, nil
		}
		if s == nil || s.proc == nil || !s.proc.addrInUse() {
			break
		}
	}
	return nil, err
}

// startTemporalOnce returns a non-nil *Temporal with the error when the process
// started, so the caller can look at its log.
func startTemporalOnce(bin, dir string) (*Temporal, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	s := &Temporal{
		Address:   hostPort(ports[0]),
		Namespace: "default",
		logPath:   filepath.Join(dir, "temporal.log"),
	}
	args := []string{"server", "start-dev",
		"--ip", "127.0.0.1",
		"--port", strconv.Itoa(ports[0]),
		"--http-port", strconv.Itoa(ports[1]),
		"--metrics-port", strconv.Itoa(ports[2]),
		"--ui-port", strconv.Itoa(ports[3]), // chosen even when headless, so the default 8233 is never touched
		"--log-level", "warn",
		// One partition per task queue, as docs/scaleout.md advises: with
		// the default four, a range queued while every data slot was busy
		// could wait a second or two in a partition no worker polled.
		"--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
		"--dynamic-config-value", "matching.numTaskqueueWritePartitions=1",
	}
	if os.Getenv("DRORCH_TEMPORAL_UI") == "1" {
		s.UIAddress = hostPort(ports[3])
	} else {
		args = append(args, "--headless")
	}
	for _, sa := range slices.Sorted(maps.Keys(SearchAttributes)) {
		args = append(args, "--search-attribute", sa+"="+SearchAttributes[sa])
	}
	// TEMPORAL_* variables (address, namespace, TLS) configure the CLI as a
	// client and must not leak in from a developer's shell.
	env := environ([]string{"TEMPORAL_"})
	p, err := startProcess("temporal", bin, args, env, s.logPath)
	if err != nil {
		return nil, err
	}
	s.proc = p
	if err := s.waitReady(temporalReadyTimeout); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return s, fmt.Errorf("temporal at %s: %w (%s); log %s ends with:\n%s", s.Address, err, p.status(), s.logPath, p.logTail(4096))
	}
	return s, nil
}

// waitReady waits until a client can connect and the namespace answers.
func (s *Temporal) waitReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if s.proc.exited() {
			return errExited
		}
		last = s.ping(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %w", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Temporal) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, s.options())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: s.Namespace})
	return err
}

func (s *Temporal) options() client.Options {
	return client.Options{
		HostPort:  s.Address,
		Namespace: s.Namespace,
		Logger:    tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	}
}

// Client returns a client for the server's namespace, closed when the test ends.
func (s *Temporal) Client(t testing.TB) client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.DialContext(ctx, s.options())
	if err != nil {
		t.Fatalf("testenv: temporal client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
