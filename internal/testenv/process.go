package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is one server started by this package. It runs in its own process
// group so that stopping it also stops anything it forked.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been waited for
	waitErr error
}

// spawner starts every child from one goroutine locked to its OS thread for the
// life of the test binary. Pdeathsig fires when the *thread* that forked the
// child exits, not the process; a thread the Go runtime retires would otherwise
// kill a healthy server in the middle of a test.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	cmd   *exec.Cmd
	netns *NetNS
	done  chan error
}

// spawn starts cmd in the network namespace netns, or in the test's own when
// netns is nil.
func spawn(cmd *exec.Cmd, netns *NetNS) error {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every child
			for r := range spawner.reqs {
				r.done <- startIn(r.cmd, r.netns)
			}
		}()
	})
	done := make(chan error, 1)
	spawner.reqs <- spawnReq{cmd: cmd, netns: netns, done: done}
	return <-done
}

// startIn runs on the spawner thread. A child is born in the network namespace
// of the thread that forks it, so the thread enters netns for the fork and goes
// back right after; the thread is locked, and Go never clones new threads from
// a locked one, so no other goroutine runs in netns. Wrapping the command in
// `ip netns exec` instead would need a second helper to drop from root to the
// user postgres inside the namespace, and changing user clears Pdeathsig; Go
// sets it after the change.
func startIn(cmd *exec.Cmd, netns *NetNS) error {
	if netns == nil {
		return cmd.Start()
	}
	home, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the test's network namespace: %w", err)
	}
	defer unix.Close(home)
	target, err := unix.Open(netns.path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", netns.name, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", netns.name, err)
	}
	startErr := cmd.Start()
	if err := unix.Setns(home, unix.CLONE_NEWNET); err != nil {
		// Every server started from now on would start inside netns.
		panic(fmt.Sprintf("testenv: leave network namespace %s: %v", netns.name, err))
	}
	return startErr
}

// command is a server for startCommand to run.
type command struct {
	name    string // for messages: "minio"
	bin     string
	args    []string
	env     []string
	dir     string              // working directory; "" for the test's
	logPath string              // stdout and stderr are appended here
	cred    *syscall.Credential // the user to run as; nil for the test's
	netns   *NetNS              // the network namespace to run in; nil for the test's
}

// startProcess starts bin with args, its stdout and stderr appended to logPath.
func startProcess(name, bin string, args, env []string, logPath string) (*process, error) {
	return startCommand(command{name: name, bin: bin, args: args, env: env, logPath: logPath})
}

// startCommand starts c in a process group of its own.
func startCommand(c command) (*process, error) {
	logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", c.name, err)
	}
	defer logf.Close() // the child holds its own copy
	fmt.Fprintf(logf, "\n--- testenv: %s %q at %s\n", c.bin, c.args, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(c.bin, c.args...)
	cmd.Dir = c.dir
	cmd.Env = c.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: c.cred}
	if err := spawn(cmd, c.netns); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.name, err)
	}
	p := &process{name: c.name, cmd: cmd, logPath: c.logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig to the process group and waits up to grace for the process to
// exit, then kills the group. It returns once the process has been reaped, and
// does nothing for a process already reaped: its id may belong to another by now.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	if p.exited() {
		return
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// logTail returns the last n bytes of the process log, for failure messages.
func (p *process) logTail(n int64) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// status describes how the process ended, for failure messages.
func (p *process) status() string {
	if !p.exited() {
		return "running"
	}
	if p.waitErr == nil {
		return "exited with status 0"
	}
	return p.waitErr.Error()
}

// addrInUse reports whether the log says the server could not bind a port, the
// one start failure worth a retry on new ports.
func (p *process) addrInUse() bool {
	tail := []byte(p.logTail(16 << 10))
	// The kernel's words (Temporal, named, postgres), and MinIO's own.
	return bytes.Contains(tail, []byte("address already in use")) || bytes.Contains(tail, []byte("port is already in use"))
}

// freePorts returns n distinct loopback ports that were free a moment ago. They
// are held together until all are chosen so the kernel does not hand out the
// same port twice; a server may still lose a race for one, which callers handle
// by retrying once.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// errExited is returned by readiness waits when the server died while starting.
var errExited = errors.New("exited while starting")

// environ returns the current environment without variables that start with any
// of the prefixes, plus extra; the servers must not pick up a developer's settings.
func environ(dropPrefixes []string, extra ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range dropPrefixes {
			if len(kv) >= len(p) && kv[:len(p)] == p {
				continue next
			}
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}
