package rfc2136_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/dns"
	"github.com/drorch/drorch/drivers/dns/rfc2136"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
)

func config(b *testenv.BIND) rfc2136.Config {
	return rfc2136.Config{
		Server: b.Addr,
		Zone:   strings.TrimSuffix(b.Zone, "."), // the trailing dot is optional
		TSIG: rfc2136.TSIG{
			Name:   "drorch-key",
			Secret: secret.New("env:DRORCH_TSIG", b.KeySecret),
		},
	}
}

func newDNS(t *testing.T, cfg rfc2136.Config) dns.DNS {
	t.Helper()
	d, err := rfc2136.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// wantPermanent fails unless err is permanent for reason and its text holds
// every one of want and none of the secrets.
func wantPermanent(t *testing.T, err error, reason string, secrets []string, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a permanent %s error", reason)
	}
	if got, ok := drivers.IsPermanent(err); !ok || got != reason {
		t.Fatalf("error %q: permanent=%v reason %q, want permanent %q", err, ok, got, reason)
	}
	wantText(t, err, secrets, want...)
}

func wantText(t *testing.T, err error, secrets []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q shows the secret", err)
		}
	}
}

func randomSecret(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestSet(t *testing.T) {
	b := testenv.StartBIND(t)
	d := newDNS(t, config(b))
	ctx := context.Background()
	app := "app." + b.Zone

	set := func(r dns.Record) {
		t.Helper()
		if err := d.Set(ctx, r); err != nil {
			t.Fatalf("Set %v: %v", r, err)
		}
	}
	// want checks what BIND itself answers, then that Get agrees.
	want := func(name, typ string, ttl uint32, values ...string) {
		t.Helper()
		got, gotTTL := b.Lookup(t, name, typ)
		if !slices.Equal(got, values) || (len(values) > 0 && gotTTL != ttl) {
			t.Fatalf("BIND answers %s %s: %q TTL %d, want %q TTL %d", name, typ, got, gotTTL, values, ttl)
		}
		r, err := d.Get(ctx, name, typ)
		if err != nil {
			t.Fatalf("Get %s %s: %v", name, typ, err)
		}
		if len(values) == 0 {
			ttl = 0
		}
		if r.Name != name || r.Type != typ || r.TTL != ttl || !slices.Equal(r.Values, values) {
			t.Fatalf("Get %s %s = %+v, want %q TTL %d", name, typ, r, values, ttl)
		}
	}

	want(app, "A", 0) // absent: no values, no error
	want("nothing.at.all."+b.Zone, "AAAA", 0)

	set(dns.Record{Name: app, Type: "A", TTL: 60, Values: []string{"192.0.2.2", "192.0.2.1"}})
	want(app, "A", 60, "192.0.2.1", "192.0.2.2")

	set(dns.Record{Name: app, Type: "A", TTL: 60, Values: []string{"198.51.100.9"}})
	want(app, "A", 60, "198.51.100.9")

	set(dns.Record{Name: app, Type: "AAAA", TTL: 60, Values: []string{"2001:DB8:0:0::1"}})
	want(app, "AAAA", 60, "2001:db8::1")
	want(app, "A", 60, "198.51.100.9") // an AAAA does not touch the A

	set(dns.Record{Name: app, Type: "A", TTL: 30, Values: []string{"198.51.100.9"}})
	want(app, "A", 30, "198.51.100.9")

	// A CNAME replaces the addresses at its name, and addresses replace a CNAME.
	set(dns.Record{Name: app, Type: "CNAME", TTL: 60, Values: []string{"Secondary.Example.Test"}})
	want(app, "CNAME", 60, "secondary.example.test.")
	want(app, "A", 0)
	want(app, "AAAA", 0)
	set(dns.Record{Name: app, Type: "CNAME", TTL: 60, Values: []string{"primary.example.test."}})
	want(app, "CNAME", 60, "primary.example.test.")
	set(dns.Record{Name: app, Type: "AAAA", TTL: 60, Values: []string{"2001:db8::2"}})
	want(app, "AAAA", 60, "2001:db8::2")
	want(app, "CNAME", 0)

	t.Run("idempotent", func(t *testing.T) {
		r := dns.Record{Name: "idem." + b.Zone, Type: "A", TTL: 120, Values: []string{"192.0.2.10", "192.0.2.11"}}
		set(r)
		serial := b.Serial(t, b.Zone)
		set(r)
		// The same set told differently is still the same set.
		set(dns.Record{Name: "IDEM." + strings.TrimSuffix(b.Zone, "."), Type: "a", TTL: 120,
			Values: []string{"192.0.2.11", "192.0.2.10", "192.0.2.11"}})
		if got := b.Serial(t, b.Zone); got != serial {
			t.Fatalf("serial went from %d to %d: setting the same set sent an update", serial, got)
		}
		set(dns.Record{Name: r.Name, Type: "A", TTL: 121, Values: r.Values})
		if got := b.Serial(t, b.Zone); got != serial+1 {
			t.Fatalf("serial went from %d to %d after a TTL change, want one update", serial, got)
		}
	})
}

func TestAuth(t *testing.T) {
	b := testenv.StartBIND(t)
	ctx := context.Background()
	name := "auth." + b.Zone
	if err := newDNS(t, config(b)).Set(ctx, dns.Record{Name: name, Type: "A", TTL: 60, Values: []string{"192.0.2.1"}}); err != nil {
		t.Fatal(err)
	}
	serial := b.Serial(t, b.Zone)
	wrong := randomSecret(t)
	secrets := []string{b.KeySecret, wrong}

	for _, tc := range []struct {
		name string
		mod  func(*rfc2136.Config)
		want []string
	}{
		{"wrong secret", func(c *rfc2136.Config) { c.TSIG.Secret = secret.New("env:WRONG", wrong) },
			[]string{"refused the TSIG key drorch-key.", "BADSIG", "check the key name, algorithm and secret"}},
		{"unknown key", func(c *rfc2136.Config) { c.TSIG.Name = "nobody-key." },
			[]string{"refused the TSIG key nobody-key.", "BADKEY"}},
		{"wrong algorithm", func(c *rfc2136.Config) { c.TSIG.Algorithm = "hmac-sha512" },
			[]string{"refused the TSIG key drorch-key."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(b)
			tc.mod(&cfg)
			err := newDNS(t, cfg).Set(ctx, dns.Record{Name: name, Type: "A", TTL: 60, Values: []string{"203.0.113.66"}})
			wantPermanent(t, err, drivers.ReasonAuth, secrets, tc.want...)
			t.Log(err)
			if got := b.Query(t, name, "A"); !slices.Equal(got, []string{"192.0.2.1"}) {
				t.Fatalf("after a refused update BIND answers %q", got)
			}
			if got := b.Serial(t, b.Zone); got != serial {
				t.Fatalf("serial went from %d to %d after a refused update", serial, got)
			}
		})
	}
}

func TestZones(t *testing.T) {
	b := testenv.StartBIND(t)
	ctx := context.Background()
	secrets := []string{b.KeySecret}

	t.Run("not on the server", func(t *testing.T) {
		for _, zone := range []string{"nope.test.", "sub.example.test."} {
			cfg := config(b)
			cfg.Zone = zone
			d := newDNS(t, cfg)
			err := d.Set(ctx, dns.Record{Name: "app." + zone, Type: "A", TTL: 60, Values: []string{"192.0.2.1"}})
			wantPermanent(t, err, drivers.ReasonNotFound, secrets, "zone "+zone+" does not exist on server "+b.Addr)
			t.Log(err)
			_, err = d.Get(ctx, "app."+zone, "A")
			wantPermanent(t, err, drivers.ReasonNotFound, secrets, "zone "+zone+" does not exist on server "+b.Addr)
		}
	})

	t.Run("no updates allowed", func(t *testing.T) {
		cfg := config(b)
		cfg.Zone = testenv.BINDOtherZone
		d := newDNS(t, cfg)
		name := "app." + testenv.BINDOtherZone
		serial := b.Serial(t, testenv.BINDOtherZone)
		err := d.Set(ctx, dns.Record{Name: name, Type: "A", TTL: 60, Values: []string{"192.0.2.1"}})
		wantPermanent(t, err, drivers.ReasonAccessDenied, secrets, "REFUSED", "drorch-key.", testenv.BINDOtherZone)
		t.Log(err)
		if got := b.Query(t, name, "A"); len(got) != 0 {
			t.Fatalf("BIND answers %q after a refused update", got)
		}
		if got := b.Serial(t, testenv.BINDOtherZone); got != serial {
			t.Fatalf("serial went from %d to %d after a refused update", serial, got)
		}
		// Reading needs no permission.
		if r, err := d.Get(ctx, "ns."+testenv.BINDOtherZone, "A"); err != nil || !slices.Equal(r.Values, []string{"127.0.0.1"}) {
			t.Fatalf("Get ns.%s A = %+v, %v", testenv.BINDOtherZone, r, err)
		}
	})
}

func TestUnreachable(t *testing.T) {
	b := testenv.StartBIND(t)
	ctx := context.Background()
	cfg := config(b)
	cfg.Timeout = time.Second
	d := newDNS(t, cfg)
	r := dns.Record{Name: "down." + b.Zone, Type: "A", TTL: 60, Values: []string{"192.0.2.1"}}

	wantUnreachable := func(t *testing.T, err error) {
		t.Helper()
		if err == nil {
			t.Fatal("no error from a server that is not there")
		}
		if reason, ok := drivers.IsPermanent(err); ok {
			t.Fatalf("error %q is permanent (%s), want transient", err, reason)
		}
		if !drivers.IsUnreachable(err) {
			t.Fatalf("error %q does not wrap drivers.ErrUnreachable", err)
		}
		wantText(t, err, []string{b.KeySecret}, b.Addr)
	}

	b.Stop(t)
	err := d.Set(ctx, r)
	wantUnreachable(t, err)
	t.Log(err)
	_, err = d.Get(ctx, r.Name, "A")
	wantUnreachable(t, err)

	b.Start(t)
	if err := d.Set(ctx, r); err != nil {
		t.Fatalf("Set after the server came back: %v", err)
	}
	if got := b.Query(t, r.Name, "A"); !slices.Equal(got, r.Values) {
		t.Fatalf("BIND answers %q, want %q", got, r.Values)
	}

	t.Run("silent", func(t *testing.T) {
		// A partitioned site drops packets rather than refusing them.
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		cfg := config(b)
		cfg.Server = pc.LocalAddr().String()
		cfg.Timeout = 300 * time.Millisecond
		start := time.Now()
		_, err = newDNS(t, cfg).Get(ctx, r.Name, "A")
		if !drivers.IsUnreachable(err) {
			t.Fatalf("Get from a silent server: %v, want unreachable", err)
		}
		if elapsed := time.Since(start); elapsed > 5*time.Second {
			t.Fatalf("Get from a silent server took %s with a timeout of %s", elapsed, cfg.Timeout)
		}
		t.Log(err)
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := d.Set(cctx, dns.Record{Name: r.Name, Type: "A", TTL: 60, Values: []string{"192.0.2.99"}})
		if !errors.Is(err, context.Canceled) || drivers.IsUnreachable(err) {
			t.Fatalf("Set with a cancelled context: %v, want context.Canceled and not unreachable", err)
		}
	})
}

func TestInvalidInput(t *testing.T) {
	// Nothing listens there: an input that passed the checks would fail as
	// unreachable instead of invalid.
	const sec = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1zaG93LXVwIQ=="
	d, err := rfc2136.New(rfc2136.Config{
		Server: "127.0.0.1:1",
		Zone:   "example.test",
		TSIG:   rfc2136.TSIG{Name: "drorch-key", Secret: secret.New("env:K", sec)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		r    dns.Record
		want string
	}{
		{dns.Record{Name: "app.example.com.", Type: "A", TTL: 60, Values: []string{"192.0.2.1"}}, "not inside zone example.test."},
		{dns.Record{Name: "app", Type: "A", TTL: 60, Values: []string{"192.0.2.1"}}, "not inside zone"},
		{dns.Record{Name: "", Type: "A", TTL: 60, Values: []string{"192.0.2.1"}}, "not a domain name"},
		{dns.Record{Name: "a..example.test.", Type: "A", TTL: 60, Values: []string{"192.0.2.1"}}, "not a domain name"},
		{dns.Record{Name: "app.example.test.", Type: "MX", TTL: 60, Values: []string{"192.0.2.1"}}, `type "MX" is not supported`},
		{dns.Record{Name: "app.example.test.", Type: "A", TTL: 0, Values: []string{"192.0.2.1"}}, "TTL 0"},
		{dns.Record{Name: "app.example.test.", Type: "A", TTL: 1 << 31, Values: []string{"192.0.2.1"}}, "TTL 2147483648"},
		{dns.Record{Name: "app.example.test.", Type: "A", TTL: 60}, "no values"},
		{dns.Record{Name: "app.example.test.", Type: "A", TTL: 60, Values: []string{"2001:db8::1"}}, "not an IPv4 address"},
		{dns.Record{Name: "app.example.test.", Type: "A", TTL: 60, Values: []string{"192.0.2.300"}}, "not an IPv4 address"},
		{dns.Record{Name: "app.example.test.", Type: "A", TTL: 60, Values: []string{"app.example.test."}}, "not an IPv4 address"},
		{dns.Record{Name: "app.example.test.", Type: "AAAA", TTL: 60, Values: []string{"192.0.2.1"}}, "not an IPv6 address"},
		{dns.Record{Name: "app.example.test.", Type: "AAAA", TTL: 60, Values: []string{"fe80::1%eth0"}}, "not an IPv6 address"},
		{dns.Record{Name: "app.example.test.", Type: "CNAME", TTL: 60, Values: []string{"a.example.test.", "b.example.test."}}, "exactly one target"},
		{dns.Record{Name: "app.example.test.", Type: "CNAME", TTL: 60, Values: []string{"a b"}}, "not a domain name"},
		{dns.Record{Name: "app.example.test.", Type: "CNAME", TTL: 60, Values: []string{"app.example.test"}}, "CNAME to itself"},
		{dns.Record{Name: "example.test.", Type: "CNAME", TTL: 60, Values: []string{"a.example.test."}}, "zone apex"},
	} {
		t.Run(fmt.Sprintf("%s_%s_%q", tc.r.Name, tc.r.Type, tc.r.Values), func(t *testing.T) {
			wantPermanent(t, d.Set(ctx, tc.r), drivers.ReasonInvalidInput, []string{sec}, tc.want)
		})
	}
	_, err = d.Get(ctx, "app.example.com.", "A")
	wantPermanent(t, err, drivers.ReasonInvalidInput, []string{sec}, "not inside zone example.test.")
	_, err = d.Get(ctx, "app.example.test.", "TXT")
	wantPermanent(t, err, drivers.ReasonInvalidInput, []string{sec}, `type "TXT" is not supported`)
}

func TestNew(t *testing.T) {
	const sec = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1zaG93LXVwIQ=="
	good := rfc2136.Config{
		Server: "ns1.example.test:53",
		Zone:   "example.test.",
		TSIG:   rfc2136.TSIG{Name: "drorch-key.", Secret: secret.New("env:DRORCH_TSIG", sec)},
	}
	d, err := rfc2136.New(good)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.Describe(), "rfc2136 ns1.example.test:53 zone example.test."; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", good, good, good, good.TSIG), fmt.Sprintf("%v %+v", d, d)} {
		if strings.Contains(s, sec) {
			t.Errorf("printing the config or driver shows the secret: %s", s)
		}
	}

	for _, tc := range []struct {
		name string
		mod  func(*rfc2136.Config)
		want string
	}{
		{"no server", func(c *rfc2136.Config) { c.Server = "" }, "server: is required"},
		{"no port", func(c *rfc2136.Config) { c.Server = "ns1.example.test" }, "must be host:port"},
		{"bad port", func(c *rfc2136.Config) { c.Server = "ns1.example.test:dns" }, "port \"dns\""},
		{"no host", func(c *rfc2136.Config) { c.Server = ":53" }, "must be host:port"},
		{"no zone", func(c *rfc2136.Config) { c.Zone = "" }, "zone: is required"},
		{"bad zone", func(c *rfc2136.Config) { c.Zone = "exa mple..test" }, "is not a domain name"},
		{"no key name", func(c *rfc2136.Config) { c.TSIG.Name = "" }, "tsig name: is required"},
		{"bad algorithm", func(c *rfc2136.Config) { c.TSIG.Algorithm = "hmac-md5" }, `"hmac-md5" is not supported`},
		{"no secret", func(c *rfc2136.Config) { c.TSIG.Secret = secret.Secret{} }, "tsig secret: is required"},
		{"secret not base64", func(c *rfc2136.Config) { c.TSIG.Secret = secret.New("env:DRORCH_TSIG", "not*base64!"+sec) },
			"tsig secret: (secret env:DRORCH_TSIG) is not base64"},
		{"negative timeout", func(c *rfc2136.Config) { c.Timeout = -time.Second }, "timeout: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			_, err := rfc2136.New(cfg)
			wantPermanent(t, err, drivers.ReasonInvalidConfig, []string{sec, "not*base64!"}, tc.want)
		})
	}
	for _, alg := range []string{"", "hmac-sha256", "HMAC-SHA384", "hmac-sha512."} {
		cfg := good
		cfg.TSIG.Algorithm = alg
		if _, err := rfc2136.New(cfg); err != nil {
			t.Errorf("algorithm %q: %v", alg, err)
		}
	}
}
