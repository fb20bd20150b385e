package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NetNS is a network namespace joined to the test's own by a veth pair: a site
// whose servers (StartMinIOIn, StartPostgresIn) the test reaches over a link it
// can cut, to see what drorch does when a site goes dark.
type NetNS struct {
	ip       string       // the ip binary
	name     string       // "drorch-0a3f", under /var/run/netns
	hostLink string       // the veth end in the test's namespace, "drorch-0a3f-h"
	nsLink   string       // the end moved into the namespace, "drorch-0a3f-n"
	subnet   netip.Prefix // a /30 in 10.213.0.0/16: .1 on hostLink, .2 on nsLink
	undo     [][]string   // ip commands that remove what was set up, in the order it was set up

	mu       sync.Mutex
	nextPort int
}

const (
	// netnsSubnets is how many /30s fit in 10.213.0.0/16: subnet i starts at
	// 10.213.(i/64).(i%64*4).
	netnsSubnets = 1 << 14
	// netnsUnreachableMetric ranks the unreachable route under the kernel's
	// route for the link (metric 0), so it only counts while the link is down.
	netnsUnreachableMetric = "4242"
	netnsFirstPort         = 10000
	netnsReachTimeout      = 10 * time.Second
	// netnsProbePort is dialled to tell whether the namespace is reachable; no
	// server listens on it, so the namespace's kernel answers with a reset.
	netnsProbePort = "9"
)

// errTaken is a name or subnet another test (or process) already uses.
var errTaken = errors.New("already in use")

// StartNetNS creates a network namespace with a free /30 from 10.213.0.0/16,
// its end of a veth pair at Addr() and the test's end at HostAddr(), both up,
// and waits until Addr() is reachable. Several can exist at once, in one test
// process or in several. When the test ends, whatever runs inside is killed
// and the namespace, the link and the route are removed, pass or fail.
//
// It needs root and ip (iproute2, `go tool task tools:debian`); without them
// the test is skipped, except in CI (CI=true), where it fails.
func StartNetNS(t testing.TB) *NetNS {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "testenv: network namespaces need root, not uid %d", os.Geteuid())
	}
	ns := &NetNS{ip: debianTool(t, "ip"), nextPort: netnsFirstPort}
	err := ns.claim()
	if err != nil && strings.Contains(err.Error(), "Operation not permitted") {
		unavailable(t, "testenv: %v", err) // root in a container without CAP_SYS_ADMIN
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if err := ns.remove(); err != nil {
			t.Errorf("testenv: remove network namespace %s: %v", ns.name, err)
		}
	})
	if err := ns.setUp(); err != nil {
		t.Fatalf("testenv: network namespace %s: %v", ns.name, err)
	}
	return ns
}

// Addr is the namespace's address, where servers started in it listen.
func (ns *NetNS) Addr() string { return ns.subnet.Addr().Next().Next().String() }

// HostAddr is the address of the test's end of the link, which connections to
// Addr() come from.
func (ns *NetNS) HostAddr() string { return ns.subnet.Addr().Next().String() }

// Cut takes the test's end of the link down: the site goes dark, its servers
// keep running. Nothing is sent to the namespace any more. An unreachable route
// that StartNetNS sets up keeps packets for Addr() from taking the default route
// instead, where what happens depends on the machine: a gateway that drops them
// (clients hang), or a proxy that accepts every connection (the site seems up).
//
// What a client sees (measured with TestNetNSCutAndRestore):
//   - a new connection fails at once, within a millisecond: "connect: no route
//     to host" (EHOSTUNREACH). minio-go retries that 10 times with backoff and
//     fails after about 6s with the same error, unless its context ends first.
//   - a connection opened before the cut hangs: nothing answers and nothing
//     resets it, so the client waits for its own timeout. A pgx query waits for
//     its context ("timeout: context deadline exceeded"); minio-go waits for
//     its context or for its one-minute ResponseHeaderTimeout, then retries on
//     new connections as above (about 64s in all).
func (ns *NetNS) Cut(t testing.TB) {
	t.Helper()
	if err := ns.run("link", "set", ns.hostLink, "down"); err != nil {
		t.Fatalf("testenv: cut: %v", err)
	}
}

// Restore brings the link back up after Cut, with its route, and waits until
// Addr() is reachable again. Connections that hung through the cut do not
// recover; new ones work.
func (ns *NetNS) Restore(t testing.TB) {
	t.Helper()
	if err := ns.run("link", "set", ns.hostLink, "up"); err != nil {
		t.Fatalf("testenv: restore: %v", err)
	}
	if err := ns.waitReachable(netnsReachTimeout); err != nil {
		t.Fatalf("testenv: restore: %v", err)
	}
}

// claim picks a random /30 and takes the names derived from it; creating a
// namespace or a link that exists fails, so two tests never get the same one.
// The subnet must also be free of addresses the machine already has.
func (ns *NetNS) claim() error {
	for range 20 {
		i := rand.IntN(netnsSubnets)
		ns.name = fmt.Sprintf("drorch-%04x", i)
		ns.hostLink, ns.nsLink = ns.name+"-h", ns.name+"-n" // at most 15 bytes, the kernel's limit
		ns.subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(i / 64), byte(i % 64 * 4)}), 30)
		err := ns.take()
		if err == nil {
			return nil
		}
		// Not remove: the namespace of that name may be another test's.
		if uerr := ns.rollback(); uerr != nil {
			return errors.Join(err, uerr)
		}
		if !errors.Is(err, errTaken) {
			return err
		}
	}
	return errors.New("no free subnet in 10.213.0.0/16 after 20 tries")
}

func (ns *NetNS) take() error {
	if err := ns.do([]string{"netns", "add", ns.name}, []string{"netns", "del", ns.name}); err != nil {
		return err
	}
	if err := ns.do(
		[]string{"link", "add", ns.hostLink, "type", "veth", "peer", "name", ns.nsLink},
		[]string{"link", "del", ns.hostLink}, // and its peer with it
	); err != nil {
		return err
	}
	out, err := exec.Command(ns.ip, "-o", "-4", "addr", "show").Output()
	if err != nil {
		return fmt.Errorf("ip -o -4 addr show: %w", err)
	}
	for line := range strings.Lines(string(out)) {
		// "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\ ..."
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		if p, err := netip.ParsePrefix(f[3]); err == nil && ns.subnet.Contains(p.Addr()) {
			return fmt.Errorf("subnet %s: %s has %s: %w", ns.subnet, strings.TrimSuffix(f[1], ":"), f[3], errTaken)
		}
	}
	return nil
}

// setUp wires the claimed namespace and link.
func (ns *NetNS) setUp() error {
	bits := "/" + strconv.Itoa(ns.subnet.Bits())
	for _, step := range [][]string{
		{"link", "set", ns.nsLink, "netns", ns.name},
		{"addr", "add", ns.HostAddr() + bits, "dev", ns.hostLink},
		{"-n", ns.name, "addr", "add", ns.Addr() + bits, "dev", ns.nsLink},
		{"-n", ns.name, "link", "set", "lo", "up"},
		{"-n", ns.name, "link", "set", ns.nsLink, "up"},
		{"link", "set", ns.hostLink, "up"},
	} {
		if err := ns.run(step...); err != nil {
			return err
		}
	}
	// "replace": a test process that was killed leaves its route behind.
	route := []string{"unreachable", ns.subnet.String(), "metric", netnsUnreachableMetric}
	if err := ns.do(append([]string{"route", "replace"}, route...), append([]string{"route", "del"}, route...)); err != nil {
		return err
	}
	return ns.waitReachable(netnsReachTimeout)
}

// waitReachable dials a port nothing listens on in the namespace: a refusal
// can only come from the namespace's kernel, so it proves that packets go both
// ways.
func (ns *NetNS) waitReachable(timeout time.Duration) error {
	addr := net.JoinHostPort(ns.Addr(), netnsProbePort)
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reachable after %s: %w", ns.Addr(), timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// remove kills whatever still runs in the namespace (the servers' own cleanups
// have stopped them by now, if they were started for the same test) and rolls
// the setup back.
func (ns *NetNS) remove() error {
	if out, err := exec.Command(ns.ip, "netns", "pids", ns.name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ns.rollback()
}

// rollback undoes the setup in reverse.
func (ns *NetNS) rollback() error {
	var errs []error
	for i := len(ns.undo) - 1; i >= 0; i-- {
		errs = append(errs, ns.run(ns.undo[i]...))
	}
	ns.undo = nil
	return errors.Join(errs...)
}

// do runs an ip command and, once it has succeeded, remembers the one that
// undoes it. A command that fails because the thing exists returns errTaken.
func (ns *NetNS) do(args, undo []string) error {
	if err := ns.run(args...); err != nil {
		if strings.Contains(err.Error(), "File exists") {
			return fmt.Errorf("%w: %w", err, errTaken)
		}
		return err
	}
	ns.undo = append(ns.undo, undo)
	return nil
}

func (ns *NetNS) run(args ...string) error {
	out, err := exec.Command(ns.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// path is the file that holds the namespace, for setns.
func (ns *NetNS) path() string { return "/var/run/netns/" + ns.name }

// ports hands out ports on Addr(). Only this package starts servers in the
// namespace, so counting up never collides.
func (ns *NetNS) ports(n int) []int {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = ns.nextPort
		ns.nextPort++
	}
	return ports
}

// listenHost is the address a server listens on: the loopback, or netns's
// Addr().
func listenHost(netns *NetNS) string {
	if netns == nil {
		return "127.0.0.1"
	}
	return netns.Addr()
}

// listenPorts returns n ports free on listenHost(netns).
func listenPorts(netns *NetNS, n int) ([]int, error) {
	if netns == nil {
		return freePorts(n)
	}
	return netns.ports(n), nil
}

// unavailable skips the test for want of something on the machine, or fails
// it in CI (CI=true), where a missing dependency must not pass silently.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
