// Package config reads and checks drorch's deployment config: one YAML file
// that names the Temporal cluster, the sites with their object stores and the
// protection plans. Workers and the CLI load it at start and fail fast with
// every problem it has, each naming the file, line and field.
//
// Secrets (store keys, encryption keys, API keys) are never written in the
// file; the file holds references ("env:NAME", "file:PATH") that are resolved
// when the config is loaded, into values that do not print.
//
// The config maps onto the driver configs in the activities; this package
// imports no driver so that it stays the one place that knows the file format.
package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/drorch/drorch/internal/secret"
)

// Defaults for fields left out of the file.
const (
	DefaultTemporalAddress   = "127.0.0.1:7233"
	DefaultTemporalNamespace = "default"
	DefaultStoreRegion       = "us-east-1"
	DefaultStoreParallel     = 8
	DefaultSourceOnChange    = "retry"
	DefaultSourceRetries     = 3
)

// EnvConfig is the environment variable Load reads the config path from when
// it is given none.
const EnvConfig = "DRORCH_CONFIG"

// DefaultFile is the file Load looks for in the working directory when it is
// given no path and EnvConfig is not set.
const DefaultFile = "drorch.yaml"

// ErrNoConfig is returned (wrapped) by Load when it was given no path and
// found no config file, so the caller can fall back to its embedded dev config.
var ErrNoConfig = errors.New("no config file")

// Config is a whole deployment config. A field's yaml tag is its key in the
// file; fields without one are filled in by Parse.
type Config struct {
	// File is where the config came from: the path it was loaded from or the
	// name given to Parse, such as "(embedded dev config)".
	File     string           `yaml:"-"`
	Temporal Temporal         `yaml:"temporal"`
	Sites    map[string]*Site `yaml:"sites"`
	Plans    map[string]*Plan `yaml:"plans"`
}

// Temporal says how to reach the Temporal cluster. Flags and environment
// variables given to the binaries override it.
type Temporal struct {
	Address   string        `yaml:"address"`
	Namespace string        `yaml:"namespace"`
	TLS       TLS           `yaml:"tls"`
	APIKey    secret.Secret `yaml:"apiKey"`
}

// TLS holds the paths of the client certificate, its key and the CA that
// signs the server's certificate, and the server name to verify.
type TLS struct {
	Cert       string `yaml:"cert"`
	Key        string `yaml:"key"`
	CA         string `yaml:"ca"`
	ServerName string `yaml:"serverName"`
}

// Enabled reports whether any TLS setting is given.
func (t TLS) Enabled() bool { return t != TLS{} }

// Site is one place that holds a copy of the data, with its own object store
// and its own workers.
type Site struct {
	Name  string `yaml:"-"` // its key under sites
	Store Store  `yaml:"store"`
}

// Store is a site's object store, which holds the repositories of every plan
// at that site.
type Store struct {
	Driver    string        `yaml:"driver"`
	Endpoint  string        `yaml:"endpoint"`
	Bucket    string        `yaml:"bucket"`
	Prefix    string        `yaml:"prefix"`
	Region    string        `yaml:"region"`
	AccessKey secret.Secret `yaml:"accessKey"`
	SecretKey secret.Secret `yaml:"secretKey"`
	Insecure  bool          `yaml:"insecure"`
	CAFile    string        `yaml:"caFile"`
	Parallel  int           `yaml:"parallel"`
}

// Plan is a protection plan: one data set, protected from its primary site to
// its secondary site.
type Plan struct {
	Name      string `yaml:"-"` // its key under plans
	Primary   string `yaml:"primary"`
	Secondary string `yaml:"secondary"`
	// Secondaries are the plan's standby sites in order of preference, for
	// a plan with more than one (secondaries: [city-b, remote-c]). Parse
	// fills both: Secondary is always Secondaries[0].
	Secondaries []string             `yaml:"secondaries"`
	Source      map[string]*Source   `yaml:"source"` // by site name
	Encryption  *Encryption          `yaml:"encryption"`
	Access      map[string][]*Access `yaml:"access"` // by site, in the order they are switched
	DNS         []*DNSRecord         `yaml:"dns"`
	Steps       []*Step              `yaml:"steps"`
	Failover    Failover             `yaml:"failover"`
	Failback    Failback             `yaml:"failback"`
	Drill       Drill                `yaml:"drill"`
	// RetryBudget is how long a step may go on failing with errors that
	// might pass (a store or worker down) before it gives up, so that a
	// stuck plan surfaces within its RPO; 0 is DefaultRetryBudget.
	RetryBudget time.Duration `yaml:"retryBudget"`
	// Parallel is how many activities a backup's upload and a transmit's
	// copy run at once, spread over the workers of the site's data queue;
	// 0 is DefaultParallel.
	Parallel int `yaml:"parallel"`
	// Schedule runs the protection cycle (Protect) by itself; nil: only by hand.
	Schedule *Schedule `yaml:"schedule"`
	// Retention says which restore points to keep at each site; nil is
	// the default policy (DefaultRetention).
	Retention *Retention `yaml:"retention"`
	// Standby is "cold" (the default: a failover restores) or "warm" (the
	// protection cycle refreshes the standby target after each transmit).
	Standby    string     `yaml:"standby"`
	Objectives Objectives `yaml:"objectives"`
	// WAL ships the plan's write-ahead log to its standbys (wal.go).
	WAL WAL `yaml:"wal"`
}

// DefaultRetryBudget is a plan's RetryBudget when the file sets none, and
// MaxRetryBudget the most it may be.
const (
	DefaultRetryBudget = time.Hour
	MaxRetryBudget     = 7 * 24 * time.Hour
)

// DefaultParallel is a plan's Parallel when the file sets none, and
// MaxParallel the most it may be.
const (
	DefaultParallel = 4
	MaxParallel     = 64
)

// Parallelism is the plan's Parallel, or DefaultParallel when unset.
func (p *Plan) Parallelism() int {
	if p.Parallel == 0 {
		return DefaultParallel
	}
	return p.Parallel
}

// Source is where a plan's data lives at one site.
type Source struct {
	Driver   string `yaml:"driver"`
	Path     string `yaml:"path"`
	OnChange string `yaml:"onChange"` // what to do when a file changes while it is read: retry or fail
	Retries  int    `yaml:"retries"`

	// Hooks run around a backup at the site: pre before the source is
	// listed (freeze, flush, take a snapshot), post after it was read,
	// also when the backup failed (thaw, drop the snapshot).
	Hooks *SourceHooks `yaml:"hooks"`

	// Backup and Restore are the commands of driver exec (exec.go).
	Backup  *ExecCommand `yaml:"backup"`
	Restore *ExecCommand `yaml:"restore"`
	// Snapshot makes a dir backup read a point-in-time view of the tree
	// (docs/snapshots.md); nil: the live tree.
	Snapshot *Snapshot `yaml:"snapshot"`

	// postgres: a PostgreSQL cluster whose data directory is Path; the
	// rules and defaults are in postgres.go.
	Mode         string        `yaml:"mode"` // physical (default) or logical (pg_dump of Database)
	Host         string        `yaml:"host"`
	Port         int           `yaml:"port"`
	User         string        `yaml:"user"`
	Password     secret.Secret `yaml:"password"`
	Database     string        `yaml:"database"`
	SSLMode      string        `yaml:"sslmode"`
	Bin          string        `yaml:"bin"`
	AfterRestore string        `yaml:"afterRestore"` // start (default) or stop
	Options      string        `yaml:"options"`      // server options a restore starts it with (pg_ctl -o)
	StartTimeout time.Duration `yaml:"startTimeout"`
}

// SourceHooks are the commands or webhooks a backup runs around reading a
// source. A failing pre hook fails the backup; a failing post hook is a
// warning of the backup's result.
type SourceHooks struct {
	Pre  []*Hook `yaml:"pre"`
	Post []*Hook `yaml:"post"`
}

// Encryption turns on encryption of a plan's chunks and manifests.
type Encryption struct {
	Key secret.Secret `yaml:"key"`
}

func (t *Temporal) setDefaults() {
	t.Address = DefaultTemporalAddress
	t.Namespace = DefaultTemporalNamespace
}

func (s *Store) setDefaults() {
	s.Region = DefaultStoreRegion
	s.Parallel = DefaultStoreParallel
}

func (s *Source) setDefaults() {
	s.OnChange = DefaultSourceOnChange
	s.Retries = DefaultSourceRetries
}

// The config types print through Format so that no verb shows a secret: fmt
// prints a pointer nested in a value under any verb but %v by walking it
// without calling its methods, which would show a secret.Secret's value
// under it. Format prints a method-less copy with %v (or %+v), under which
// every nested config value and Secret prints through its own methods. A new
// type that holds a Secret, or a pointer to one that does, needs a Format too;
// TestEveryTypeWithASecretHasFormat checks. Source has one so that it prints
// its fields rather than its address.

func (c Config) Format(f fmt.State, verb rune)     { type plain Config; formatPlain(f, plain(c)) }
func (t Temporal) Format(f fmt.State, verb rune)   { type plain Temporal; formatPlain(f, plain(t)) }
func (s Site) Format(f fmt.State, verb rune)       { type plain Site; formatPlain(f, plain(s)) }
func (s Store) Format(f fmt.State, verb rune)      { type plain Store; formatPlain(f, plain(s)) }
func (p Plan) Format(f fmt.State, verb rune)       { type plain Plan; formatPlain(f, plain(p)) }
func (e Encryption) Format(f fmt.State, verb rune) { type plain Encryption; formatPlain(f, plain(e)) }
func (s Source) Format(f fmt.State, verb rune)     { type plain Source; formatPlain(f, plain(s)) }

func formatPlain(f fmt.State, v any) {
	if f.Flag('+') || f.Flag('#') {
		fmt.Fprintf(f, "%+v", v)
		return
	}
	fmt.Fprintf(f, "%v", v)
}

// Option changes how a config is loaded.
type Option func(*options)

type options struct {
	noSecrets bool
}

// WithoutSecrets checks that secret references are well formed but does not
// resolve them: the secrets in the result hold only their reference. For
// programs that need the config but no secret, such as the CLI, which only
// starts workflows.
func WithoutSecrets() Option {
	return func(o *options) { o.noSecrets = true }
}

// Load reads and checks the config file at path. With path "" it uses
// $DRORCH_CONFIG and then ./drorch.yaml; if neither is there it returns an
// error that wraps ErrNoConfig. A file named by path or $DRORCH_CONFIG must
// exist.
func Load(path string, opts ...Option) (*Config, error) {
	if path == "" {
		path = os.Getenv(EnvConfig)
	}
	if path == "" {
		if _, err := os.Stat(DefaultFile); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: no --config given, %s not set and no ./%s", ErrNoConfig, EnvConfig, DefaultFile)
			}
			return nil, fmt.Errorf("load config: %w", err)
		}
		path = DefaultFile
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, data, opts...)
}

// Parse checks the config in data; file names it in errors and becomes
// Config.File. The error, if any, lists every problem found, one per line
// in the order of the file; each is an *Error.
func Parse(file string, data []byte, opts ...Option) (*Config, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	d := newDecoder(file, o)
	cfg := d.parse(data)
	if err := d.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Plan returns the plan with that name.
func (c *Config) Plan(name string) (*Plan, error) {
	if p, ok := c.Plans[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("unknown plan %q; %s defines: %s", name, c.File, strings.Join(sortedKeys(c.Plans), ", "))
}

// Site returns the site with that name.
func (c *Config) Site(name string) (*Site, error) {
	if s, ok := c.Sites[name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("unknown site %q; %s defines: %s", name, c.File, strings.Join(sortedKeys(c.Sites), ", "))
}

// SourceAt returns the plan's source at a site.
func (p *Plan) SourceAt(site string) (*Source, error) {
	if s, ok := p.Source[site]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("plan %s has no source at site %q; it has sources at: %s", p.Name, site, strings.Join(sortedKeys(p.Source), ", "))
}

// Sites returns the plan's sites: its primary, then its secondaries in order.
func (p *Plan) Sites() []string { return append([]string{p.Primary}, p.Secondaries...) }

// HasSite reports whether site is one of the plan's sites.
func (p *Plan) HasSite(site string) bool { return slices.Contains(p.Sites(), site) }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
