package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BIND is a BIND 9 authoritative server started for one test. It serves Zone,
// which accepts dynamic updates signed with the TSIG key KeyName, and
// "other.test.", which accepts no updates at all.
type BIND struct {
	Addr      string // 127.0.0.1:port, UDP and TCP
	Zone      string // "example.test."
	KeyName   string // TSIG key name, "drorch-key."
	KeySecret string // base64 HMAC-SHA256 secret, random per server
	Dir       string // configuration, zone files and journals; survives Stop/Start

	bin     string
	conf    string
	logPath string
	proc    *process
}

// BINDOtherZone is the zone every BIND serves that allows no updates.
const BINDOtherZone = "other.test."

const (
	bindReadyTimeout = 30 * time.Second
	bindStopGrace    = 10 * time.Second
)

// StartBIND starts named in the foreground on a free loopback port with its
// configuration, zones and journals in a temporary directory, and waits until
// it answers for its zone. It runs without rndc and without recursion, and is
// stopped when the test ends; when the test fails, the tail of its log is
// reported.
func StartBIND(t testing.TB) *BIND {
	t.Helper()
	bin := outsideAppArmor(t, debianTool(t, "named"))
	dir := t.TempDir()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatalf("testenv: bind key: %v", err)
	}
	b := &BIND{
		Zone:      "example.test.",
		KeyName:   "drorch-key.",
		KeySecret: base64.StdEncoding.EncodeToString(key),
		Dir:       dir,
		bin:       bin,
		conf:      filepath.Join(dir, "named.conf"),
		logPath:   filepath.Join(dir, "named.log"),
	}
	for _, z := range []string{b.Zone, BINDOtherZone} {
		if err := os.WriteFile(b.zoneFile(z), []byte(bindZone(z)), 0o644); err != nil {
			t.Fatalf("testenv: bind zone: %v", err)
		}
	}
	// A port can be taken between choosing it and named binding it: try once
	// more on a new port before giving up.
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var port int
		if port, err = freeUDPAndTCPPort(); err != nil {
			break
		}
		b.Addr = hostPort(port)
		if err = os.WriteFile(b.conf, []byte(b.config(port)), 0o644); err != nil {
			break
		}
		err = b.start()
		if err == nil || b.proc == nil || !bytes.Contains([]byte(b.proc.logTail(16<<10)), []byte("address in use")) {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: named at %s, log %s; tail:\n%s", b.Addr, b.logPath, b.proc.logTail(2048))
		}
		b.proc.stop(syscall.SIGTERM, bindStopGrace)
	})
	return b
}

func (b *BIND) zoneFile(zone string) string {
	return filepath.Join(b.Dir, strings.TrimSuffix(zone, ".")+".zone")
}

func bindZone(zone string) string {
	return fmt.Sprintf(`$TTL 300
@	IN SOA	ns.%[1]s hostmaster.%[1]s 1 3600 600 86400 60
@	IN NS	ns.%[1]s
ns	IN A	127.0.0.1
`, zone)
}

// config is named.conf for one port. Everything named writes lives in Dir;
// "controls {}" turns rndc off, so servers of parallel tests never fight over
// port 953 or /etc/bind/rndc.key.
func (b *BIND) config(port int) string {
	return fmt.Sprintf(`key %[1]q {
	algorithm hmac-sha256;
	secret %[2]q;
};
controls { };
options {
	directory %[3]q;
	pid-file %[4]q;
	session-keyfile %[5]q;
	managed-keys-directory %[3]q;
	listen-on port %[6]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
	dnssec-validation no;
	allow-transfer { none; };
};
zone %[7]q {
	type primary;
	file %[8]q;
	allow-update { key %[1]q; };
};
zone %[9]q {
	type primary;
	file %[10]q;
};
`, b.KeyName, b.KeySecret, b.Dir, filepath.Join(b.Dir, "named.pid"), filepath.Join(b.Dir, "session.key"), port,
		b.Zone, b.zoneFile(b.Zone), BINDOtherZone, b.zoneFile(BINDOtherZone))
}

// start runs named on b's port and files and waits for it to answer. On
// failure the process is gone and the error carries the log tail.
func (b *BIND) start() error {
	// -g: foreground, log to stderr; -4: no IPv6 sockets; -n 1: one worker
	// thread, the tests share two cores with the rest of the suite.
	args := []string{"-g", "-4", "-n", "1", "-c", b.conf}
	p, err := startProcess("named", b.bin, args, environ(nil), b.logPath)
	if err != nil {
		return err
	}
	b.proc = p
	if err := b.waitReady(bindReadyTimeout); err != nil {
		p.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("named at %s: %w (%s); log %s ends with:\n%s", b.Addr, err, p.status(), b.logPath, p.logTail(4096))
	}
	return nil
}

// waitReady waits until the server answers authoritatively for its zone over
// both UDP and TCP. named keeps running when it cannot bind its port, so the
// log is checked too.
func (b *BIND) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if b.proc.exited() {
			return errExited
		}
		if bytes.Contains([]byte(b.proc.logTail(16<<10)), []byte("address in use")) {
			return errors.New("cannot listen: address in use")
		}
		if b.answersSOA("udp") && b.answersSOA("tcp") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer for %s after %s", b.Zone, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *BIND) answersSOA(network string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r, err := b.exchange(ctx, network, b.Zone, dns.TypeSOA)
	return err == nil && r.Rcode == dns.RcodeSuccess && r.Authoritative && len(r.Answer) > 0
}

// Stop stops the server (SIGTERM, then SIGKILL after a grace period) and waits
// for it to exit. Start brings it back with the same zones, updates included.
func (b *BIND) Stop(t testing.TB) {
	t.Helper()
	b.proc.stop(syscall.SIGTERM, bindStopGrace)
}

// Start restarts a stopped server on the same port and files.
func (b *BIND) Start(t testing.TB) {
	t.Helper()
	if !b.proc.exited() {
		t.Fatalf("testenv: named at %s is already running", b.Addr)
	}
	if err := b.start(); err != nil {
		t.Fatalf("testenv: restart: %v", err)
	}
}

// Query asks the server for the records of name and type (such as "A" or
// "SOA") and returns their values sorted: addresses for A and AAAA, the target
// for CNAME, the presentation form of the data otherwise. An absent name or
// type gives no values.
func (b *BIND) Query(t testing.TB, name, typ string) []string {
	t.Helper()
	values, _ := b.Lookup(t, name, typ)
	return values
}

// Lookup is Query that also returns the records' TTL (0 when there are none).
func (b *BIND) Lookup(t testing.TB, name, typ string) (values []string, ttl uint32) {
	t.Helper()
	qtype, ok := dns.StringToType[strings.ToUpper(typ)]
	if !ok {
		t.Fatalf("testenv: bind query: unknown type %q", typ)
	}
	name = dns.Fqdn(name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := b.exchange(ctx, "udp", name, qtype)
	if err == nil && r.Truncated {
		r, err = b.exchange(ctx, "tcp", name, qtype)
	}
	if err != nil {
		t.Fatalf("testenv: bind query %s %s at %s: %v", name, typ, b.Addr, err)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		t.Fatalf("testenv: bind query %s %s at %s: %s", name, typ, b.Addr, dns.RcodeToString[r.Rcode])
	}
	for _, rr := range r.Answer {
		h := rr.Header()
		if h.Rrtype != qtype || !strings.EqualFold(h.Name, name) {
			continue
		}
		ttl = h.Ttl
		switch rr := rr.(type) {
		case *dns.A:
			values = append(values, rr.A.String())
		case *dns.AAAA:
			values = append(values, rr.AAAA.String())
		case *dns.CNAME:
			values = append(values, rr.Target)
		default:
			values = append(values, strings.TrimPrefix(rr.String(), h.String()))
		}
	}
	sort.Strings(values)
	return values, ttl
}

// Serial returns the SOA serial of zone, which named increments with every
// update it applies.
func (b *BIND) Serial(t testing.TB, zone string) uint32 {
	t.Helper()
	soa := b.Query(t, zone, "SOA")
	if len(soa) != 1 {
		t.Fatalf("testenv: bind: zone %s has %d SOA records", zone, len(soa))
	}
	f := strings.Fields(soa[0])
	if len(f) < 3 {
		t.Fatalf("testenv: bind: cannot read the serial of %q", soa[0])
	}
	n, err := strconv.ParseUint(f[2], 10, 32)
	if err != nil {
		t.Fatalf("testenv: bind: serial of %q: %v", soa[0], err)
	}
	return uint32(n)
}

func (b *BIND) exchange(ctx context.Context, network, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	m.SetEdns0(4096, false)
	c := &dns.Client{Net: network}
	r, _, err := c.ExchangeContext(ctx, m, b.Addr)
	return r, err
}

// freeUDPAndTCPPort returns a loopback port that was free a moment ago for both
// UDP and TCP, as a DNS server needs both.
func freeUDPAndTCPPort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", hostPort(port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("find a free port: no port free for both UDP and TCP")
}

// debianTool returns the path of a binary installed from a Debian package
// ("named"), looked up at $DRORCH_<NAME>_BIN, in PATH and in /usr/sbin (which
// is not in every user's PATH). When it is missing the test is skipped, except
// in CI (CI=true), where a missing server must not pass silently.
func debianTool(t testing.TB, name string) string {
	t.Helper()
	env := "DRORCH_" + strings.ToUpper(name) + "_BIN"
	if p := os.Getenv(env); p != "" {
		if err := isExecutable(p); err != nil {
			t.Fatalf("testenv: %s=%s: %v", env, p, err)
		}
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, name); isExecutable(p) == nil {
			return p
		}
	}
	msg := fmt.Sprintf("testenv: %s not found ($%s, PATH, /usr/sbin): install it with `go tool task tools:debian`", name, env)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// appArmorProfiles lists the loaded AppArmor profiles, where AppArmor is on.
var appArmorProfiles = "/sys/kernel/security/apparmor/profiles"

// outsideAppArmor returns a path that runs bin free of the AppArmor profile
// Debian's bind9 package confines /usr/sbin/named with where AppArmor is on
// (named may then read only /etc/bind, write only /var/cache/bind and a few
// more, while tests keep their zones in temporary directories): a copy of
// the binary at another path, which the profile, attached by path, does not
// reach. Without an AppArmor profile for named, bin itself.
func outsideAppArmor(t testing.TB, bin string) string {
	t.Helper()
	profiles, err := os.ReadFile(appArmorProfiles)
	if err != nil || !bytes.Contains(profiles, []byte("named")) {
		return bin
	}
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := filepath.Join(os.TempDir(), "drorch-unconfined")
	copyPath := filepath.Join(dir, filepath.Base(bin))
	if have, err := os.ReadFile(copyPath); err == nil && bytes.Equal(have, want) {
		return copyPath
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	tmp, err := os.CreateTemp(dir, ".named-*")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	_, werr := tmp.Write(want)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o755), os.Rename(tmp.Name(), copyPath)); err != nil {
		os.Remove(tmp.Name())
		t.Fatalf("testenv: copy %s out of AppArmor's reach: %v", bin, err)
	}
	t.Logf("testenv: AppArmor confines %s; running a copy at %s", bin, copyPath)
	return copyPath
}
