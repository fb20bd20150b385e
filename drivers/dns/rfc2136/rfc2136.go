// Package rfc2136 points names at a site with dynamic updates (RFC 2136) signed
// with a TSIG key (RFC 8945), on any authoritative server that accepts them:
// BIND, Knot, PowerDNS, Windows DNS.
package rfc2136

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/drorch/drorch/drivers"
	dnsdriver "github.com/drorch/drorch/drivers/dns"
	"github.com/drorch/drorch/internal/secret"
)

// Config names the authoritative server, the zone and the key that may update it.
type Config struct {
	Server  string        // host:port of the authoritative (primary) server
	Zone    string        // zone to update, e.g. "example.com" (trailing dot optional)
	TSIG    TSIG          // key that signs the updates
	Timeout time.Duration // per exchange with the server (default 5s)
}

// TSIG is a shared key as the server knows it (BIND: `tsig-keygen -a hmac-sha256 NAME`).
type TSIG struct {
	Name      string        // key name, e.g. "drorch-key" (trailing dot optional)
	Algorithm string        // "hmac-sha256" (default), "hmac-sha384" or "hmac-sha512"
	Secret    secret.Secret // the base64 secret
}

// String shows the key's name and algorithm, never its secret.
func (k TSIG) String() string {
	return fmt.Sprintf("TSIG{Name:%s Algorithm:%s Secret:%s}", k.Name, k.Algorithm, k.Secret)
}

const (
	defaultTimeout   = 5 * time.Second
	defaultAlgorithm = "hmac-sha256"

	// fudge is the clock skew the server tolerates between its clock and the
	// time the update was signed (RFC 8945 recommends 300 s).
	fudge = 300

	// udpSize is the EDNS buffer size for queries, the size that avoids IP
	// fragmentation (DNS flag day 2020); larger answers come over TCP.
	udpSize = 1232

	maxTTL = 1<<31 - 1 // RFC 2181 §8
)

// algorithms maps the accepted algorithm names to their wire names.
var algorithms = map[string]string{
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

type server struct {
	addr    string
	zone    string // lower case, fully qualified
	key     tsigKey
	timeout time.Duration
}

var _ dnsdriver.DNS = (*server)(nil)

// New returns the driver for cfg. It checks the configuration but does not
// contact the server; Get and Set do.
func New(cfg Config) (dnsdriver.DNS, error) {
	if err := cfg.validate(); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("rfc2136: %w", err))
	}
	alg := strings.TrimSuffix(strings.ToLower(cfg.TSIG.Algorithm), ".")
	if alg == "" {
		alg = defaultAlgorithm
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = defaultTimeout
	}
	return &server{
		addr:    cfg.Server,
		zone:    dns.CanonicalName(cfg.Zone),
		key:     tsigKey{name: dns.CanonicalName(cfg.TSIG.Name), alg: algorithms[alg], secret: cfg.TSIG.Secret},
		timeout: timeout,
	}, nil
}

// validate reports every problem with cfg at once, each naming its field.
func (cfg Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if cfg.Server == "" {
		bad("server", "is required (host:port of the authoritative server)")
	} else if host, port, err := net.SplitHostPort(cfg.Server); err != nil || host == "" {
		bad("server", "%q must be host:port, e.g. \"ns1.example.com:53\"", cfg.Server)
	} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		bad("server", "%q: port %q must be a number from 1 to 65535", cfg.Server, port)
	}
	switch {
	case cfg.Zone == "":
		bad("zone", "is required")
	case !isDomainName(cfg.Zone) || cfg.Zone == ".":
		bad("zone", "%q is not a domain name", cfg.Zone)
	}
	switch {
	case cfg.TSIG.Name == "":
		bad("tsig name", "is required (the key name the server knows)")
	case !isDomainName(cfg.TSIG.Name) || cfg.TSIG.Name == ".":
		bad("tsig name", "%q is not a valid key name", cfg.TSIG.Name)
	}
	if alg := strings.TrimSuffix(strings.ToLower(cfg.TSIG.Algorithm), "."); alg != "" && algorithms[alg] == "" {
		bad("tsig algorithm", "%q is not supported: use hmac-sha256, hmac-sha384 or hmac-sha512", cfg.TSIG.Algorithm)
	}
	if cfg.TSIG.Secret.IsZero() {
		bad("tsig secret", "is required")
	} else if b, err := base64.StdEncoding.DecodeString(cfg.TSIG.Secret.Value()); err != nil || len(b) == 0 {
		// The error from the decoder is left out: it quotes the offending position.
		bad("tsig secret", "%s is not base64 (the secret line that tsig-keygen prints)", cfg.TSIG.Secret)
	}
	if cfg.Timeout < 0 {
		bad("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	return errors.Join(errs...)
}

// isDomainName reports whether s is a domain name in presentation form, with
// or without the trailing dot.
func isDomainName(s string) bool {
	_, ok := dns.IsDomainName(s)
	return ok && !strings.ContainsAny(s, " \t\n\\")
}

func (s *server) Describe() string { return "rfc2136 " + s.addr + " zone " + s.zone }

// String is Describe, so that printing the driver never prints its key.
func (s *server) String() string { return s.Describe() }

// Set replaces the record set in one update message that removes the old set
// (and, as a name holding a CNAME can hold nothing else, a CNAME where an
// address goes or the addresses where a CNAME goes) and adds the new one. It
// sends no update when the server already answers with r, and after an update
// it reads the set back from the server until it answers with r.
func (s *server) Set(ctx context.Context, r dnsdriver.Record) error {
	want, err := s.record(r)
	if err != nil {
		return fmt.Errorf("%s: set %s %s: %w", s.Describe(), r.Name, r.Type, err)
	}
	op := fmt.Sprintf("%s: set %s %s", s.Describe(), want.Name, want.Type)
	if err := s.checkZone(ctx); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	have, err := s.lookup(ctx, want.Name, want.Type)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if sameSet(have, want) {
		return nil
	}
	if err := s.update(ctx, want); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if err := s.verify(ctx, want); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Get asks the server for the set with recursion off, after checking that the
// server is authoritative for the zone.
func (s *server) Get(ctx context.Context, name, typ string) (dnsdriver.Record, error) {
	op := fmt.Sprintf("%s: get %s %s", s.Describe(), name, typ)
	name, typ, err := s.nameType(name, typ)
	if err != nil {
		return dnsdriver.Record{}, fmt.Errorf("%s: %w", op, err)
	}
	if err := s.checkZone(ctx); err != nil {
		return dnsdriver.Record{}, fmt.Errorf("%s: %w", op, err)
	}
	rec, err := s.lookup(ctx, name, typ)
	if err != nil {
		return dnsdriver.Record{}, fmt.Errorf("%s: %w", op, err)
	}
	return rec, nil
}

// nameType checks and normalises the name and type of a record set: a lower-case
// fully qualified name inside the zone, and one of the types drorch sets.
func (s *server) nameType(name, typ string) (string, string, error) {
	typ = strings.ToUpper(typ)
	switch typ {
	case "A", "AAAA", "CNAME":
	default:
		return "", "", drivers.Permanentf(drivers.ReasonInvalidInput, "type %q is not supported: use A, AAAA or CNAME", typ)
	}
	if name == "" || !isDomainName(name) {
		return "", "", drivers.Permanentf(drivers.ReasonInvalidInput, "%q is not a domain name", name)
	}
	name = dns.CanonicalName(name)
	if !dns.IsSubDomain(s.zone, name) {
		return "", "", drivers.Permanentf(drivers.ReasonInvalidInput, "name %s is not inside zone %s", name, s.zone)
	}
	return name, typ, nil
}

// record checks r and returns it normalised as the server will answer it:
// values sorted, without duplicates, addresses in their canonical form and
// names lower case and fully qualified.
func (s *server) record(r dnsdriver.Record) (dnsdriver.Record, error) {
	name, typ, err := s.nameType(r.Name, r.Type)
	if err != nil {
		return dnsdriver.Record{}, err
	}
	invalid := func(format string, args ...any) error {
		return drivers.Permanentf(drivers.ReasonInvalidInput, format, args...)
	}
	if r.TTL == 0 || r.TTL > maxTTL {
		return dnsdriver.Record{}, invalid("TTL %d must be from 1 to %d seconds", r.TTL, maxTTL)
	}
	if len(r.Values) == 0 {
		return dnsdriver.Record{}, invalid("no values: a record set needs at least one")
	}
	values := make([]string, 0, len(r.Values))
	for _, v := range r.Values {
		switch typ {
		case "A", "AAAA":
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" || (typ == "A") != a.Is4() {
				version := "4"
				if typ == "AAAA" {
					version = "6"
				}
				return dnsdriver.Record{}, invalid("%q is not an IPv%s address", v, version)
			}
			values = append(values, a.String())
		case "CNAME":
			if !isDomainName(v) || v == "." {
				return dnsdriver.Record{}, invalid("CNAME target %q is not a domain name", v)
			}
			values = append(values, dns.CanonicalName(v))
		}
	}
	slices.Sort(values)
	values = slices.Compact(values)
	if typ == "CNAME" {
		switch {
		case len(values) != 1:
			return dnsdriver.Record{}, invalid("a CNAME has exactly one target, got %d", len(values))
		case name == s.zone:
			return dnsdriver.Record{}, invalid("the zone apex %s cannot be a CNAME: it holds the SOA and NS records", name)
		case values[0] == name:
			return dnsdriver.Record{}, invalid("%s cannot be a CNAME to itself", name)
		}
	}
	return dnsdriver.Record{Name: name, Type: typ, TTL: r.TTL, Values: values}, nil
}

func sameSet(a, b dnsdriver.Record) bool {
	return a.TTL == b.TTL && slices.Equal(a.Values, b.Values)
}

// update sends the one message that replaces the set, signed and over TCP: a
// UDP answer could be lost after the server applied the update, and TCP never
// truncates.
func (s *server) update(ctx context.Context, r dnsdriver.Record) error {
	typ := dns.StringToType[r.Type]
	rrset := func(t uint16) dns.RR {
		return &dns.ANY{Hdr: dns.RR_Header{Name: r.Name, Rrtype: t, Class: dns.ClassINET}}
	}
	m := new(dns.Msg)
	m.SetUpdate(s.zone)
	if typ == dns.TypeCNAME {
		m.RemoveRRset([]dns.RR{rrset(dns.TypeA), rrset(dns.TypeAAAA), rrset(dns.TypeCNAME)})
	} else {
		m.RemoveRRset([]dns.RR{rrset(dns.TypeCNAME), rrset(typ)})
	}
	rrs := make([]dns.RR, 0, len(r.Values))
	for _, v := range r.Values {
		h := dns.RR_Header{Name: r.Name, Rrtype: typ, Class: dns.ClassINET, Ttl: r.TTL}
		switch typ {
		case dns.TypeA:
			rrs = append(rrs, &dns.A{Hdr: h, A: net.IP(netip.MustParseAddr(v).AsSlice())})
		case dns.TypeAAAA:
			rrs = append(rrs, &dns.AAAA{Hdr: h, AAAA: net.IP(netip.MustParseAddr(v).AsSlice())})
		case dns.TypeCNAME:
			rrs = append(rrs, &dns.CNAME{Hdr: h, Target: v})
		}
	}
	m.Insert(rrs)
	m.SetTsig(s.key.name, s.key.alg, fudge, time.Now().Unix())

	resp, err := s.exchange(ctx, m, "tcp", true)
	if resp == nil {
		return s.noAnswer(ctx, "update", err)
	}
	// A TSIG error comes back in an unsigned response, so it is looked at
	// before the failed verification of that response.
	if t := resp.IsTsig(); t != nil && t.Error != dns.RcodeSuccess {
		return drivers.Permanentf(drivers.ReasonAuth,
			"the server refused the TSIG key %s (%s): check the key name, algorithm and secret", s.key.name, rcode(int(t.Error)))
	}
	switch resp.Rcode {
	case dns.RcodeSuccess:
		if err != nil {
			return fmt.Errorf("the server's answer to the update failed TSIG verification, so whether it was applied is unknown: %w", err)
		}
		if resp.IsTsig() == nil {
			return errors.New("the server's answer to the signed update is unsigned, so whether it was applied is unknown")
		}
		return nil
	case dns.RcodeRefused:
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"the server refused the update (REFUSED): key %s may not update zone %s (check allow-update or update-policy)", s.key.name, s.zone)
	case dns.RcodeNotAuth:
		// The zone's SOA was just answered with authority, so it is the key
		// that the server does not accept here.
		return drivers.Permanentf(drivers.ReasonAuth,
			"the server refused the update (NOTAUTH): it does not accept key %s for zone %s", s.key.name, s.zone)
	case dns.RcodeNotZone, dns.RcodeNameError:
		return s.noZone(rcode(resp.Rcode))
	case dns.RcodeNotImplemented:
		return drivers.Permanentf(drivers.ReasonInvalidConfig, "the server does not accept dynamic updates (NOTIMP)")
	case dns.RcodeFormatError:
		return drivers.Permanentf(drivers.ReasonInvalidInput, "the server rejected the update as malformed (FORMERR)")
	default: // SERVFAIL and anything unexpected: the server's trouble, maybe passing
		return fmt.Errorf("the server failed the update (%s)", rcode(resp.Rcode))
	}
}

// verify reads the set back until the server answers with r, within one
// timeout: a server applies an update before it answers, but one that
// answers queries from another process or a secondary may lag a little.
func (s *server) verify(ctx context.Context, want dnsdriver.Record) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	wait := 20 * time.Millisecond
	for {
		have, err := s.lookup(ctx, want.Name, want.Type)
		if err == nil && sameSet(have, want) {
			return nil
		}
		if _, ok := drivers.IsPermanent(err); ok {
			return fmt.Errorf("verify: %w", err)
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("verify: %w", err)
			}
			return fmt.Errorf("the server accepted the update but answers %q TTL %d instead of %q TTL %d",
				have.Values, have.TTL, want.Values, want.TTL)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// checkZone asks for the zone's SOA: only a server that holds the zone answers
// it with authority, whatever it answers for the names inside.
func (s *server) checkZone(ctx context.Context) error {
	resp, err := s.query(ctx, s.zone, dns.TypeSOA)
	if err != nil {
		return err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError: // NXDOMAIN: the zone may be a missing name inside another
	case dns.RcodeServerFailure:
		// BIND answers so for a zone it holds but could not load.
		return fmt.Errorf("the server failed to answer for zone %s (SERVFAIL)", s.zone)
	default:
		return s.noZone(rcode(resp.Rcode))
	}
	if !resp.Authoritative {
		return s.noZone("it is not authoritative for it")
	}
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == dns.TypeSOA && dns.CanonicalName(rr.Header().Name) == s.zone {
			return nil
		}
	}
	for _, rr := range resp.Ns {
		if rr.Header().Rrtype == dns.TypeSOA {
			return s.noZone("the name is inside its zone " + dns.CanonicalName(rr.Header().Name))
		}
	}
	return s.noZone("no SOA record")
}

func (s *server) noZone(why string) error {
	return drivers.Permanentf(drivers.ReasonNotFound, "zone %s does not exist on server %s (%s)", s.zone, s.addr, why)
}

// lookup asks the server for one set. The zone is known to be there, so an
// absent name or type is an empty set.
func (s *server) lookup(ctx context.Context, name, typ string) (dnsdriver.Record, error) {
	qtype := dns.StringToType[typ]
	resp, err := s.query(ctx, name, qtype)
	if err != nil {
		return dnsdriver.Record{}, err
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeRefused, dns.RcodeNotAuth:
		return dnsdriver.Record{}, s.noZone(rcode(resp.Rcode))
	default:
		return dnsdriver.Record{}, fmt.Errorf("the server failed to answer (%s)", rcode(resp.Rcode))
	}
	if !resp.Authoritative {
		// A referral: the name is in a zone delegated to other servers.
		return dnsdriver.Record{}, drivers.Permanentf(drivers.ReasonInvalidInput,
			"%s is delegated away from zone %s: server %s is not authoritative for it", name, s.zone, s.addr)
	}
	rec := dnsdriver.Record{Name: name, Type: typ}
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype != qtype || dns.CanonicalName(h.Name) != name {
			continue // the chain of a CNAME, when the A or AAAA of its target was asked
		}
		rec.TTL = h.Ttl
		switch rr := rr.(type) {
		case *dns.A:
			a, _ := netip.AddrFromSlice(rr.A.To4())
			rec.Values = append(rec.Values, a.String())
		case *dns.AAAA:
			a, _ := netip.AddrFromSlice(rr.AAAA)
			rec.Values = append(rec.Values, a.String())
		case *dns.CNAME:
			rec.Values = append(rec.Values, dns.CanonicalName(rr.Target))
		}
	}
	slices.Sort(rec.Values)
	rec.Values = slices.Compact(rec.Values)
	return rec, nil
}

// query asks one question with recursion off, over UDP and again over TCP when
// the answer does not fit.
func (s *server) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	m.SetEdns0(udpSize, false)
	resp, err := s.exchange(ctx, m, "udp", false)
	if err == nil && resp.Truncated {
		resp, err = s.exchange(ctx, m, "tcp", false)
	}
	if err != nil {
		return nil, s.noAnswer(ctx, "query "+name+" "+dns.TypeToString[qtype], err)
	}
	return resp, nil
}

// exchange sends m and reads the answer within the timeout and ctx, whose
// cancellation closes the connection at once. On a failed TSIG verification it
// returns the answer along with the error.
func (s *server) exchange(ctx context.Context, m *dns.Msg, network string, signed bool) (*dns.Msg, error) {
	tctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: s.timeout, UDPSize: udpSize}
	if signed {
		c.TsigProvider = s.key
	}
	conn, err := c.DialContext(tctx, s.addr)
	if err == nil {
		defer conn.Close()
		stop := context.AfterFunc(tctx, func() { conn.Close() })
		defer stop()
		var resp *dns.Msg
		resp, _, err = c.ExchangeWithConnContext(tctx, m, conn)
		if err == nil || tctx.Err() == nil {
			return resp, err
		}
	}
	switch {
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case tctx.Err() != nil:
		return nil, fmt.Errorf("no answer over %s within %s", network, s.timeout)
	}
	return nil, err
}

// noAnswer classifies the failure to get any answer at all: the caller's
// cancellation is passed on as it is; anything else (refused, reset, timed
// out) means the server could not be reached.
func (s *server) noAnswer(ctx context.Context, op string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("%s: %w", op, ctx.Err())
	}
	return fmt.Errorf("%s: server %s: %w: %w", op, s.addr, drivers.ErrUnreachable, err)
}

func rcode(c int) string {
	if s, ok := dns.RcodeToString[c]; ok {
		return s
	}
	return "rcode " + strconv.Itoa(c)
}

// tsigKey signs and verifies with the configured key whatever case the server
// spells the key name in, which miekg/dns's map of secrets would not.
type tsigKey struct {
	name   string // lower case, fully qualified
	alg    string // wire name, e.g. dns.HmacSHA256
	secret secret.Secret
}

func (k tsigKey) Generate(msg []byte, t *dns.TSIG) ([]byte, error) {
	var h func() hash.Hash
	switch dns.CanonicalName(t.Algorithm) {
	case dns.HmacSHA256:
		h = sha256.New
	case dns.HmacSHA384:
		h = sha512.New384
	case dns.HmacSHA512:
		h = sha512.New
	default:
		return nil, dns.ErrKeyAlg
	}
	raw, err := base64.StdEncoding.DecodeString(k.secret.Value())
	if err != nil {
		return nil, errors.New("tsig secret is not base64") // checked by New; the decoder's error would quote it
	}
	mac := hmac.New(h, raw)
	mac.Write(msg)
	return mac.Sum(nil), nil
}

func (k tsigKey) Verify(msg []byte, t *dns.TSIG) error {
	if dns.CanonicalName(t.Hdr.Name) != k.name {
		return dns.ErrSecret
	}
	want, err := k.Generate(msg, t)
	if err != nil {
		return err
	}
	got, err := hex.DecodeString(t.MAC)
	if err != nil || !hmac.Equal(want, got) {
		return dns.ErrSig
	}
	return nil
}
