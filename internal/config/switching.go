package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/drorch/drorch/internal/secret"
)

// What a plan needs to switch sites: the resources to make read-only or
// read-write at each site, the DNS records to repoint, the recovery plan's
// steps, and how data recovery (failback) decides it has caught up.

// Access is one resource a failover makes read-only at the old active site
// and read-write at the new one. Driver says which fields apply.
type Access struct {
	Driver string `yaml:"driver"` // postgres, s3bucket, exec, http

	// postgres
	Host     string        `yaml:"host"`
	Port     int           `yaml:"port"`
	User     string        `yaml:"user"`
	Password secret.Secret `yaml:"password"`
	Database string        `yaml:"database"`
	SSLMode  string        `yaml:"sslmode"`
	Roles    []string      `yaml:"roles"` // the application's login roles: NOLOGIN while read-only

	// s3bucket
	Endpoint  string        `yaml:"endpoint"`
	Bucket    string        `yaml:"bucket"`
	Region    string        `yaml:"region"`
	AccessKey secret.Secret `yaml:"accessKey"`
	SecretKey secret.Secret `yaml:"secretKey"`
	Insecure  bool          `yaml:"insecure"`
	CAFile    string        `yaml:"caFile"`
	Users     []string      `yaml:"users"`  // MinIO IAM users the fence stops too
	Groups    []string      `yaml:"groups"` // MinIO IAM groups, likewise

	// exec
	SetMode []string `yaml:"setMode"`
	Status  []string `yaml:"status"`
	Env     []string `yaml:"env"`
	Dir     string   `yaml:"dir"`

	// http
	URL       string                   `yaml:"url"`
	StatusURL string                   `yaml:"statusURL"`
	Headers   map[string]secret.Secret `yaml:"headers"`

	Timeout time.Duration `yaml:"timeout"` // every driver; 0 is the driver's default
}

// DNSRecord is one record set a failover repoints, with its values at each
// site.
type DNSRecord struct {
	Driver  string              `yaml:"driver"` // rfc2136
	Server  string              `yaml:"server"` // host:port of the authoritative server
	Zone    string              `yaml:"zone"`
	Name    string              `yaml:"name"` // inside the zone: "app" or "app.example.com."
	Type    string              `yaml:"type"` // A, AAAA, CNAME
	TTL     int                 `yaml:"ttl"`
	Values  map[string][]string `yaml:"values"` // by site
	TSIG    TSIG                `yaml:"tsig"`
	Timeout time.Duration       `yaml:"timeout"`
}

// TSIG is the key DNS updates are signed with.
type TSIG struct {
	Name      string        `yaml:"name"`
	Algorithm string        `yaml:"algorithm"`
	Secret    secret.Secret `yaml:"secret"`
}

// Step is one group of a recovery plan: hooks before, a fixed wait, an
// operator's approval, hooks after. On says which procedures run it.
type Step struct {
	Name     string        `yaml:"name"`
	On       []string      `yaml:"on"` // failover, failback, drill; default all three
	Before   []*Hook       `yaml:"before"`
	Wait     time.Duration `yaml:"wait"`
	Approval *Approval     `yaml:"approval"`
	After    []*Hook       `yaml:"after"`
}

// Hook is a command or a webhook a step runs; it fails the step unless it
// exits 0 or answers 2xx.
type Hook struct {
	Exec    []string      `yaml:"exec"`
	HTTP    string        `yaml:"http"`   // URL
	Method  string        `yaml:"method"` // default GET
	Timeout time.Duration `yaml:"timeout"`
}

// Approval pauses a step until an operator sends the approve signal.
type Approval struct {
	Timeout time.Duration `yaml:"timeout"`
}

// Drill says where a drill restores: a sandbox never used by production.
type Drill struct {
	Sandbox string `yaml:"sandbox"` // default: the standby's source path + ".drill"
}

// Failover says how an unplanned failover decides that a site is dark.
type Failover struct {
	// DarkAfter is how long a site may take to answer (its worker to pick
	// a task up, its store or access resources to reply) before an
	// unplanned failover counts it dark and goes on without it.
	DarkAfter time.Duration `yaml:"darkAfter"`
}

// Failback says when data recovery has caught up.
type Failback struct {
	LagThreshold time.Duration `yaml:"lagThreshold"` // caught up when the primary's data is younger than this after a round
	Interval     time.Duration `yaml:"interval"`     // pause between sync rounds
	AutoComplete bool          `yaml:"autoComplete"` // complete without the operator's signal
}

// Defaults of the switching settings.
const (
	DefaultDNSTTL           = 60
	DefaultTSIGAlgorithm    = "hmac-sha256"
	DefaultFailbackLag      = 5 * time.Minute
	DefaultFailbackInterval = 30 * time.Second
	DefaultApprovalTimeout  = time.Hour
	DefaultDarkAfter        = 10 * time.Second
)

// Procedures a recovery step can run in.
var stepProcedures = []string{"failover", "failback", "drill"}

func (r *DNSRecord) setDefaults() { r.TTL = DefaultDNSTTL; r.Driver = "rfc2136" }
func (t *TSIG) setDefaults()      { t.Algorithm = DefaultTSIGAlgorithm }
func (f *Failback) setDefaults() {
	f.LagThreshold = DefaultFailbackLag
	f.Interval = DefaultFailbackInterval
}
func (a *Approval) setDefaults() { a.Timeout = DefaultApprovalTimeout }
func (f *Failover) setDefaults() { f.DarkAfter = DefaultDarkAfter }

func (f *Failover) validate(d *decoder, path string) {
	if f.DarkAfter < time.Second || f.DarkAfter > 10*time.Minute {
		d.errorf(join(path, "darkAfter"), "must be 1s to 10m, got %s: the time a site that answers needs to answer, at most", f.DarkAfter)
	}
}

func (a Access) Format(f fmt.State, verb rune)    { type plain Access; formatPlain(f, plain(a)) }
func (r DNSRecord) Format(f fmt.State, verb rune) { type plain DNSRecord; formatPlain(f, plain(r)) }
func (t TSIG) Format(f fmt.State, verb rune)      { type plain TSIG; formatPlain(f, plain(t)) }

// accessFields lists, per driver, the keys it takes besides driver and
// timeout; a key of another driver is an error rather than silently unused.
var accessFields = map[string][]string{
	"postgres": {"host", "port", "user", "password", "database", "sslmode", "roles"},
	"s3bucket": {"endpoint", "bucket", "region", "accessKey", "secretKey", "insecure", "caFile", "users", "groups"},
	"exec":     {"setMode", "status", "env", "dir"},
	"http":     {"url", "statusURL", "headers", "caFile", "insecure"},
}

func (a *Access) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	allowed, ok := accessFields[a.Driver]
	if !ok {
		d.errorf(f("driver"), "must be one of %s, got %q", strings.Join(sortedKeys(accessFields), ", "), a.Driver)
		return
	}
	v := reflect.ValueOf(*a)
	for _, fd := range fieldsOf(v.Type()) {
		if fd.key == "driver" || fd.key == "timeout" || slices.Contains(allowed, fd.key) {
			continue
		}
		if !v.Field(fd.index).IsZero() {
			d.errorf(f(fd.key), "not a setting of the %s driver; it takes %s", a.Driver, strings.Join(allowed, ", "))
		}
	}
	switch a.Driver {
	case "postgres":
		if a.Host == "" {
			d.errorf(f("host"), "required")
		}
		if a.Port < 0 || a.Port > 65535 {
			d.errorf(f("port"), "must be 1 to 65535 (0: 5432)")
		}
		if a.User == "" {
			d.errorf(f("user"), "required")
		}
		if a.Password.Ref() == "" {
			d.errorf(f("password"), `required: a reference "env:NAME" or "file:PATH"`)
		}
		a.validateRoles(d, f("roles"))
	case "s3bucket":
		if err := hostPort(a.Endpoint, false); err != nil {
			d.errorf(f("endpoint"), "%v", err)
		}
		if err := bucketName(a.Bucket); err != nil {
			d.errorf(f("bucket"), "%v", err)
		}
		for key, s := range map[string]secret.Secret{"accessKey": a.AccessKey, "secretKey": a.SecretKey} {
			if s.Ref() == "" {
				d.errorf(f(key), `required: a reference "env:NAME" or "file:PATH"`)
			}
		}
		for key, names := range map[string][]string{"users": a.Users, "groups": a.Groups} {
			for i, n := range names {
				if strings.TrimSpace(n) == "" {
					d.errorf(fmt.Sprintf("%s[%d]", f(key), i), "must be a MinIO IAM %s name, got %q", strings.TrimSuffix(key, "s"), n)
				}
			}
		}
	case "exec":
		if len(a.SetMode) == 0 || a.SetMode[0] == "" {
			d.errorf(f("setMode"), "required: the command and its arguments; the mode is added as the last argument")
		}
		if len(a.Status) == 0 || a.Status[0] == "" {
			d.errorf(f("status"), `required: a command that prints "read-only" or "read-write"`)
		}
	case "http":
		if err := httpURL(a.URL); err != nil {
			d.errorf(f("url"), "%v", err)
		}
		if a.StatusURL != "" {
			if err := httpURL(a.StatusURL); err != nil {
				d.errorf(f("statusURL"), "%v", err)
			}
		}
	}
}

// validateRoles checks a postgres fence's roles: the application's login
// roles, which read-only makes NOLOGIN. They are required, as the cluster's
// read-only default alone is one the application can lift for itself (SET
// default_transaction_read_only = off, BEGIN READ WRITE).
func (a *Access) validateRoles(d *decoder, path string) {
	if len(a.Roles) == 0 {
		d.errorf(path, "required: the application's login roles, e.g. [app]; read-only makes them NOLOGIN, "+
			"since default_transaction_read_only alone is a default any session can turn off")
		return
	}
	for i, r := range a.Roles {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case strings.TrimSpace(r) == "":
			d.errorf(p, "must be a role name, got %q", r)
		case r == a.User:
			d.errorf(p, "%q is the user drorch connects as (user): a fence would lock drorch out, and it could not lift it", r)
		case strings.EqualFold(r, "public") || strings.HasPrefix(r, "pg_"):
			d.errorf(p, "%q is not a login role (PUBLIC and pg_* roles are PostgreSQL's own)", r)
		case slices.Contains(a.Roles[:i], r):
			d.errorf(p, "%q is listed twice", r)
		}
	}
}

func (r *DNSRecord) validate(d *decoder, path string, p *Plan) {
	f := func(key string) string { return join(path, key) }
	if r.Driver != "rfc2136" {
		d.errorf(f("driver"), `must be "rfc2136", got %q`, r.Driver)
	}
	if err := hostPort(r.Server, true); err != nil {
		d.errorf(f("server"), "%v", err)
	}
	if r.Zone == "" {
		d.errorf(f("zone"), "required, e.g. example.com")
	}
	if r.Name == "" {
		d.errorf(f("name"), "required: the record's name, e.g. app (in the zone) or app.example.com.")
	}
	if !slices.Contains([]string{"A", "AAAA", "CNAME"}, r.Type) {
		d.errorf(f("type"), "must be A, AAAA or CNAME, got %q", r.Type)
	}
	if r.TTL < 1 || r.TTL > 86400 {
		d.errorf(f("ttl"), "must be 1 to 86400 seconds, got %d", r.TTL)
	}
	for _, site := range p.Sites() {
		vals, ok := r.Values[site]
		vp := join(f("values"), site)
		if !ok || len(vals) == 0 {
			d.errorf(vp, "required: the record's value(s) when %s is active", site)
			continue
		}
		for i, v := range vals {
			if err := dnsValue(r.Type, v); err != nil {
				d.errorf(fmt.Sprintf("%s[%d]", vp, i), "%v", err)
			}
		}
		if r.Type == "CNAME" && len(vals) > 1 {
			d.errorf(vp, "a CNAME has exactly one value, got %d", len(vals))
		}
	}
	for _, site := range sortedKeys(r.Values) {
		if !p.HasSite(site) {
			d.errorf(join(f("values"), site), "%q is not a site of this plan", site)
		}
	}
	if r.TSIG.Name == "" {
		d.errorf(join(f("tsig"), "name"), "required: the TSIG key's name")
	}
	if !slices.Contains([]string{"hmac-sha256", "hmac-sha512"}, r.TSIG.Algorithm) {
		d.errorf(join(f("tsig"), "algorithm"), "must be hmac-sha256 or hmac-sha512, got %q", r.TSIG.Algorithm)
	}
	if r.TSIG.Secret.Ref() == "" {
		d.errorf(join(f("tsig"), "secret"), `required: a reference "env:NAME" or "file:PATH"`)
	}
}

func (s *Step) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	if !nameRule.MatchString(s.Name) {
		d.errorf(f("name"), "step name %s", nameHelp)
	}
	for i, on := range s.On {
		if !slices.Contains(stepProcedures, on) {
			d.errorf(fmt.Sprintf("%s[%d]", f("on"), i), "must be one of %s, got %q", strings.Join(stepProcedures, ", "), on)
		}
	}
	if len(s.Before) == 0 && len(s.After) == 0 && s.Wait == 0 && s.Approval == nil {
		d.errorf(path, "does nothing: give it before or after hooks, a wait or an approval")
	}
	for key, hooks := range map[string][]*Hook{"before": s.Before, "after": s.After} {
		for i, h := range hooks {
			h.validate(d, fmt.Sprintf("%s[%d]", f(key), i))
		}
	}
}

func (h *Hook) validate(d *decoder, path string) {
	switch {
	case len(h.Exec) > 0 && h.HTTP != "":
		d.errorf(path, "give exec or http, not both")
	case len(h.Exec) == 0 && h.HTTP == "":
		d.errorf(path, "required: exec (a command) or http (a URL)")
	case h.HTTP != "":
		if err := httpURL(h.HTTP); err != nil {
			d.errorf(join(path, "http"), "%v", err)
		}
		if h.Method != "" && !slices.Contains([]string{"GET", "POST", "PUT"}, h.Method) {
			d.errorf(join(path, "method"), "must be GET, POST or PUT, got %q", h.Method)
		}
	case h.Exec[0] == "":
		d.errorf(join(path, "exec"), "the command is empty")
	}
}

// RunsOn reports whether the step runs in procedure (failover, failback or
// drill).
func (s *Step) RunsOn(procedure string) bool {
	return len(s.On) == 0 || slices.Contains(s.On, procedure)
}

func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("must be an http:// or https:// URL, got %q", s)
	}
	return nil
}

func dnsValue(typ, v string) error {
	switch typ {
	case "A":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return fmt.Errorf("must be an IPv4 address, got %q", v)
		}
	case "AAAA":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is6() || a.Is4In6() {
			return fmt.Errorf("must be an IPv6 address, got %q", v)
		}
	case "CNAME":
		if v == "" || strings.ContainsAny(v, " /:") {
			return fmt.Errorf("must be a host name, got %q", v)
		}
	}
	return nil
}
