package config

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The rules a decoded config must follow. Each check reports at the path of
// the field; the decoder adds the file and line. A check reports nothing for a
// field that already failed to decode.

var nameRule = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

const nameHelp = `must be 1 to 63 lowercase letters, digits, "_" and "-", starting with a letter or digit`

var (
	storeDrivers  = []string{"s3"}
	sourceDrivers = []string{"dir", "exec", "postgres"}
	onChanges     = []string{"retry", "fail"}
)

func (c *Config) validate(d *decoder) {
	c.Temporal.validate(d, "temporal")
	if len(c.Sites) == 0 {
		d.errorf("sites", "at least one site is required")
	}
	for _, name := range sortedKeys(c.Sites) {
		path := join("sites", name)
		if !nameRule.MatchString(name) {
			d.errorf(path, "site name %s", nameHelp)
		}
		c.Sites[name].Store.validate(d, join(path, "store"))
	}
	if len(c.Plans) == 0 {
		d.errorf("plans", "at least one plan is required")
	}
	for _, name := range sortedKeys(c.Plans) {
		path := join("plans", name)
		if !nameRule.MatchString(name) {
			d.errorf(path, "plan name %s", nameHelp)
		}
		c.Plans[name].validate(d, path, c)
	}
}

func (t *Temporal) validate(d *decoder, path string) {
	if err := hostPort(t.Address, true); err != nil {
		d.errorf(join(path, "address"), "%v", err)
	}
	if strings.TrimSpace(t.Namespace) != t.Namespace {
		d.errorf(join(path, "namespace"), "must not start or end with white space")
	}
	tls := join(path, "tls")
	if t.TLS.Cert != "" && t.TLS.Key == "" {
		d.errorf(join(tls, "key"), "required when tls.cert is set")
	}
	if t.TLS.Key != "" && t.TLS.Cert == "" {
		d.errorf(join(tls, "cert"), "required when tls.key is set")
	}
}

func (s *Store) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	switch {
	case s.Driver == "":
		d.errorf(f("driver"), "required; supported: %s", strings.Join(storeDrivers, ", "))
	case !slices.Contains(storeDrivers, s.Driver):
		d.errorf(f("driver"), "unsupported store driver %q; supported: %s", s.Driver, strings.Join(storeDrivers, ", "))
	}
	switch scheme, _, ok := strings.Cut(s.Endpoint, "://"); {
	case s.Endpoint == "":
		d.errorf(f("endpoint"), "required: the store's host:port")
	case ok && strings.EqualFold(scheme, "http"):
		d.errorf(f("endpoint"), "must be host:port without a scheme; drop %q and set insecure: true for plain HTTP", scheme+"://")
	case ok:
		d.errorf(f("endpoint"), "must be host:port without a scheme; drop %q", scheme+"://")
	default:
		if err := hostPort(s.Endpoint, false); err != nil {
			d.errorf(f("endpoint"), "%v", err)
		}
	}
	if s.Bucket == "" {
		d.errorf(f("bucket"), "required")
	} else if err := bucketName(s.Bucket); err != nil {
		d.errorf(f("bucket"), "%v, got %q", err, s.Bucket)
	}
	switch {
	case strings.HasPrefix(s.Prefix, "/") || strings.HasSuffix(s.Prefix, "/"):
		d.errorf(f("prefix"), `must not start or end with "/", got %q`, s.Prefix)
	case strings.Contains(s.Prefix, "//"):
		d.errorf(f("prefix"), `must not contain "//", got %q`, s.Prefix)
	case slices.ContainsFunc(strings.Split(s.Prefix, "/"), func(seg string) bool { return seg == "." || seg == ".." }):
		d.errorf(f("prefix"), `must not contain "." or ".." segments, got %q`, s.Prefix)
	}
	if s.Parallel < 1 || s.Parallel > 256 {
		d.errorf(f("parallel"), "must be between 1 and 256, got %d", s.Parallel)
	}
	if s.AccessKey.Ref() == "" {
		d.errorf(f("accessKey"), `required: a reference "env:NAME" or "file:PATH"`)
	}
	if s.SecretKey.Ref() == "" {
		d.errorf(f("secretKey"), `required: a reference "env:NAME" or "file:PATH"`)
	}
	if s.Insecure && s.CAFile != "" {
		d.errorf(f("caFile"), "is for TLS, but insecure: true makes the store plain HTTP; drop one of them")
	}
}

func (p *Plan) validate(d *decoder, path string, c *Config) {
	f := func(key string) string { return join(path, key) }
	sites := strings.Join(sortedKeys(c.Sites), ", ")
	known := func(key, site string) {
		switch _, ok := c.Sites[site]; {
		case site == "":
			d.errorf(f(key), "required: the name of a site; sites: %s", sites)
		case !ok:
			d.errorf(f(key), "unknown site %q; sites: %s", site, sites)
		}
	}
	known("primary", p.Primary)
	switch {
	case p.Secondary != "" && len(p.Secondaries) > 0:
		d.errorf(f("secondaries"), "give secondary or secondaries, not both")
		p.Secondaries = []string{p.Secondary}
	case len(p.Secondaries) > 0:
		seen := map[string]bool{p.Primary: true}
		for i, site := range p.Secondaries {
			key := fmt.Sprintf("secondaries[%d]", i)
			known(key, site)
			if seen[site] && site != "" {
				d.errorf(f(key), "%q is named twice among the plan's sites", site)
			}
			seen[site] = true
		}
		p.Secondary = p.Secondaries[0]
	default:
		known("secondary", p.Secondary)
		if p.Primary != "" && p.Primary == p.Secondary {
			d.errorf(f("secondary"), "must differ from primary (both are %q)", p.Primary)
		}
		if p.Secondary != "" {
			p.Secondaries = []string{p.Secondary}
		}
	}
	src := f("source")
	for _, site := range sortedKeys(p.Source) {
		path := join(src, site)
		if !p.HasSite(site) {
			d.errorf(path, "%q is not a site of this plan; its sites are %s", site, strings.Join(p.Sites(), ", "))
		}
		p.Source[site].validate(d, path)
	}
	if _, ok := p.Source[p.Primary]; !ok && p.Primary != "" {
		d.errorf(src, "required at the primary site: add source.%s", p.Primary)
	}
	if p.Encryption != nil {
		p.Encryption.validate(d, f("encryption"))
	}
	if b := p.RetryBudget; b != 0 && (b < time.Minute || b > MaxRetryBudget) {
		d.errorf(f("retryBudget"), "must be 1m to %s, got %s", MaxRetryBudget, b)
	}
	if n := p.Parallel; n < 0 || n > MaxParallel {
		d.errorf(f("parallel"), "must be 1 to %d, got %d", MaxParallel, n)
	}
	for _, site := range sortedKeys(p.Access) {
		path := join(f("access"), site)
		if !p.HasSite(site) {
			d.errorf(path, "%q is not a site of this plan", site)
		}
		for i, a := range p.Access[site] {
			a.validate(d, fmt.Sprintf("%s[%d]", path, i))
		}
	}
	for i, r := range p.DNS {
		r.validate(d, fmt.Sprintf("%s[%d]", f("dns"), i), p)
	}
	p.Failover.validate(d, f("failover"))
	p.WAL.validate(d, f("wal"))
	p.validatePostgresModes(d, path) // postgres.go
	p.validateProtection(d, path)
	if sb := p.Drill.Sandbox; sb != "" {
		if !filepath.IsAbs(sb) || filepath.Clean(sb) != sb || sb == "/" {
			d.errorf(join(f("drill"), "sandbox"), "must be an absolute, clean path other than /, got %q", sb)
		}
		for _, site := range sortedKeys(p.Source) {
			if src := p.Source[site].Path; src != "" && (strings.HasPrefix(sb+"/", src+"/") || strings.HasPrefix(src+"/", sb+"/")) {
				d.errorf(join(f("drill"), "sandbox"), "overlaps the source at %s (%s): a drill must never touch production", site, src)
			}
		}
	}
	names := map[string]bool{}
	for i, s := range p.Steps {
		path := fmt.Sprintf("%s[%d]", f("steps"), i)
		s.validate(d, path)
		if names[s.Name] {
			d.errorf(join(path, "name"), "another step is named %q", s.Name)
		}
		names[s.Name] = true
	}
}

func (s *Source) validate(d *decoder, path string) {
	f := func(key string) string { return join(path, key) }
	switch {
	case s.Driver == "":
		d.errorf(f("driver"), "required; supported: %s", strings.Join(sourceDrivers, ", "))
	case !slices.Contains(sourceDrivers, s.Driver):
		d.errorf(f("driver"), "unsupported source driver %q; supported: %s", s.Driver, strings.Join(sourceDrivers, ", "))
	}
	s.validateExec(d, path)
	switch {
	case s.Driver == "exec", s.Driver == "postgres" && s.Mode == PostgresLogical: // no path: exec.go, postgres.go
	case s.Path == "":
		d.errorf(f("path"), "required: an absolute path")
	case !filepath.IsAbs(s.Path):
		d.errorf(f("path"), "must be an absolute path, got %q", s.Path)
	case filepath.Clean(s.Path) != s.Path:
		d.errorf(f("path"), "must be a clean path (%q), got %q", filepath.Clean(s.Path), s.Path)
	case s.Path == "/":
		d.errorf(f("path"), `must not be "/"`)
	}
	if !slices.Contains(onChanges, s.OnChange) {
		d.errorf(f("onChange"), "must be one of %s, got %q", strings.Join(onChanges, ", "), s.OnChange)
	}
	if s.Retries < 0 || s.Retries > 100 {
		d.errorf(f("retries"), "must be between 0 and 100, got %d", s.Retries)
	}
	if s.Snapshot != nil {
		s.Snapshot.validate(d, f("snapshot"), s)
	}
	s.validatePostgres(d, path)
	if s.Hooks != nil {
		if len(s.Hooks.Pre) == 0 && len(s.Hooks.Post) == 0 {
			d.errorf(f("hooks"), "does nothing: give pre or post hooks, or leave hooks out")
		}
		for key, hooks := range map[string][]*Hook{"pre": s.Hooks.Pre, "post": s.Hooks.Post} {
			for i, h := range hooks {
				if h == nil {
					d.errorf(fmt.Sprintf("%s[%d]", join(f("hooks"), key), i), "required: exec (a command) or http (a URL)")
					continue
				}
				h.validate(d, fmt.Sprintf("%s[%d]", join(f("hooks"), key), i))
			}
		}
	}
}

func (e *Encryption) validate(d *decoder, path string) {
	key := join(path, "key")
	if e.Key.Ref() == "" {
		d.errorf(key, `required: a reference "env:NAME" or "file:PATH" to a 32-byte key`)
		return
	}
	if e.Key.IsZero() {
		return // not resolved: WithoutSecrets
	}
	if _, err := e.KeyBytes(); err != nil {
		d.errorf(key, "%v", err)
	}
}

// KeyBytes returns the 32-byte key, decoded from the 64 hex digits or the
// base64 (standard or URL alphabet, padded or not) it is written in, around
// which white space is ignored. It accepts what repo.ParseKey accepts.
func (e *Encryption) KeyBytes() ([]byte, error) {
	return decodeKey(e.Key.Value(), e.Key.Ref())
}

func decodeKey(v, ref string) ([]byte, error) {
	v = strings.TrimSpace(v)
	if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(v); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	// Never the value, nor its length: the error goes to logs.
	return nil, fmt.Errorf("the key from %s must be 32 bytes written as 64 hex digits or in base64 (make one with: openssl rand -hex 32)", ref)
}

// hostPort checks an address "host:port", or "host" when needPort is false.
func hostPort(addr string, needPort bool) error {
	if addr == "" {
		return fmt.Errorf("required: host:port")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if needPort || strings.Contains(addr, ":") && !strings.HasPrefix(addr, "[") {
			return fmt.Errorf("must be host:port, got %q", addr)
		}
		host, port = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), ""
	}
	if host == "" || strings.ContainsAny(host, "/ ?#@") {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port must be a number from 1 to 65535, got %q", addr)
		}
	}
	return nil
}

var bucketRule = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)

// bucketName checks the S3 bucket naming rules.
func bucketName(b string) error {
	switch {
	case !bucketRule.MatchString(b):
		return fmt.Errorf("must be 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit")
	case strings.Contains(b, ".."):
		return fmt.Errorf("must not contain two dots in a row")
	case strings.Contains(b, ".-") || strings.Contains(b, "-."):
		return fmt.Errorf(`must not have "-" next to "."`)
	}
	if a, err := netip.ParseAddr(b); err == nil && a.Is4() {
		return fmt.Errorf("must not look like an IP address")
	}
	return nil
}
