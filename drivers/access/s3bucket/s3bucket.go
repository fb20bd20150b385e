// Package s3bucket fences an S3 bucket by its bucket policy: read-only adds a
// statement (Sid "drorch-read-only") that denies object writes and deletes to
// every principal; read-write removes that statement again. Every other
// statement of the bucket's policy is kept as it is, so drorch can share a
// bucket policy with whatever else the operator put there.
//
// Who the deny reaches depends on the server:
//   - AWS S3 (and Ceph RGW) evaluate an explicit Deny in a bucket policy for
//     every principal, the account's own users included: the fence binds
//     every application.
//   - MinIO evaluates bucket policies only for anonymous (unsigned) requests.
//     A signed request — by the root user or by any other user — is checked
//     against the user's IAM policies alone (MinIO's IAMSys.IsAllowed never
//     reads the bucket policy). The bucket policy alone therefore stops
//     anonymous writers only.
//
// On MinIO, list the applications' identities in Config.Users and
// Config.Groups (MinIO's built-in IAM users and groups, not LDAP or OpenID
// ones): read-only then also attaches the canned IAM policy
// "drorch-read-only-<bucket>", which denies the same object writes on the
// bucket, to each of them, and read-write detaches it again. A user's
// service accounts and temporary credentials inherit the deny; a group's
// deny reaches its members. Status is read-only only when the bucket
// statement is there and the policy is attached to every listed identity,
// read-write only when neither is, and an error naming what is fenced and
// what is not for anything in between, so a switch cut short is never
// reported as done.
//
// MinIO's root user can never be fenced: no policy applies to it, and MinIO
// refuses to attach one. Give applications their own credentials, never the
// root account's, on any server.
//
// The credentials drorch uses need s3:GetBucketPolicy, s3:PutBucketPolicy and
// s3:DeleteBucketPolicy on the bucket. The deny does not cover those actions,
// so drorch can always lift the fence it set. With users or groups they also
// need admin:GetPolicy, admin:CreatePolicy, admin:AttachUserOrGroupPolicy,
// admin:GetUser and admin:GetGroup on the MinIO server.
//
// The policy is read, changed and written back: S3 has no conditional write for
// bucket policies, so a concurrent change by someone else between the read and
// the write is lost. drorch runs one switching operation per plan at a time;
// keep other tools from editing the same policy during a failover.
package s3bucket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptrace"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/s3client"
	"github.com/drorch/drorch/internal/secret"
)

// Config locates the bucket to fence and says how to reach it.
type Config struct {
	Endpoint  string // host:port, no scheme
	Bucket    string
	Region    string // optional (default "us-east-1")
	AccessKey secret.Secret
	SecretKey secret.Secret
	Insecure  bool          // plain HTTP (TLS off)
	CAFile    string        // optional PEM bundle to trust for TLS, in addition to the system's
	Timeout   time.Duration // bounds each SetMode and Status call (default 30s)

	// Users and Groups are MinIO IAM identities whose writes the fence must
	// stop too; see the package doc. Both optional, MinIO only.
	Users  []string
	Groups []string
}

// Sid names drorch's statement in the bucket policy.
const Sid = "drorch-read-only"

// deniedActions are the object writes the fence denies. s3:PutObject covers
// uploads, copies into the bucket and every step of a multipart upload;
// s3:DeleteObject covers single and multi-object deletes.
var deniedActions = []string{
	"s3:PutObject",
	"s3:DeleteObject",
	"s3:PutObjectTagging",
	"s3:DeleteObjectVersion",
	"s3:AbortMultipartUpload",
}

const (
	defaultRegion  = "us-east-1"
	defaultTimeout = 30 * time.Second
	policyVersion  = "2012-10-17"

	// dialTimeout bounds connecting; a partitioned site drops packets.
	dialTimeout = 10 * time.Second
)

type bucket struct {
	client   *minio.Client
	bucket   string
	timeout  time.Duration
	describe string

	// The IAM fence; admin is nil when no user or group is listed.
	admin      *madmin.AdminClient
	identities []identity
	policy     string // the canned policy's name
}

var _ access.Access = (*bucket)(nil)

// New returns the access driver for cfg. It checks the configuration but does
// not contact the server.
func New(cfg Config) (access.Access, error) {
	if err := cfg.validate(); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("s3bucket access: %w", err))
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	client, err := s3client.New(s3client.Options{
		Endpoint: cfg.Endpoint, Region: cfg.Region, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey,
		Insecure: cfg.Insecure, CAFile: cfg.CAFile, DialTimeout: min(dialTimeout, cfg.Timeout),
	})
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("s3bucket access: %w", err))
	}
	b := &bucket{
		client:   client,
		bucket:   cfg.Bucket,
		timeout:  cfg.Timeout,
		describe: "s3bucket " + cfg.Endpoint + "/" + cfg.Bucket,
	}
	if len(cfg.Users) > 0 || len(cfg.Groups) > 0 {
		if b.admin, err = newAdmin(cfg); err != nil {
			return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("s3bucket access: %w", err))
		}
		for _, u := range cfg.Users {
			b.identities = append(b.identities, identity{name: u})
		}
		for _, g := range cfg.Groups {
			b.identities = append(b.identities, identity{name: g, group: true})
		}
		b.policy = PolicyName(cfg.Bucket)
		b.describe += describeIdentities(cfg.Users, cfg.Groups)
	}
	return b, nil
}

// validate reports every problem with cfg at once, each naming its field.
func (cfg Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	errs = append(errs, s3client.Check(s3client.Options{Endpoint: cfg.Endpoint, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, Insecure: cfg.Insecure, CAFile: cfg.CAFile}, cfg.Bucket)...)
	if cfg.Timeout < 0 {
		bad("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	for field, names := range map[string][]string{"users": cfg.Users, "groups": cfg.Groups} {
		for i, n := range names {
			switch {
			case n == "":
				bad(fmt.Sprintf("%s[%d]", field, i), "is empty")
			case strings.TrimSpace(n) != n || strings.Contains(n, ","):
				bad(fmt.Sprintf("%s[%d]", field, i), "%q: MinIO names have no comma and no leading or trailing space", n)
			case slices.Index(names, n) < i:
				bad(fmt.Sprintf("%s[%d]", field, i), "%q is listed twice", n)
			}
		}
	}
	return errors.Join(errs...)
}

func (b *bucket) Describe() string { return b.describe }

// SetMode writes the bucket policy and the IAM policy only when they have to
// change, so setting the mode in force changes nothing. Read-only sets the
// bucket statement first and then the IAM fence; read-write lifts them in
// the reverse order. Either way the bucket policy is read first, so a server
// that cannot be reached is found before anything is changed.
func (b *bucket) SetMode(ctx context.Context, mode access.Mode) error {
	if _, err := access.ParseMode(string(mode)); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("set mode on %s: %w", b.describe, err))
	}
	what := fmt.Sprintf("set %s on %s", mode, b.describe)
	c := b.call(ctx)
	defer c.cancel()

	raw, err := b.client.GetBucketPolicy(c.ctx, b.bucket)
	if err != nil {
		return c.classify(what+": read bucket policy", err)
	}
	p, err := parsePolicy(raw)
	if err != nil {
		return drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("%s: %w", what, err))
	}
	ours, others := p.split()
	var (
		next  string
		write bool // whether next must be written
	)
	switch mode {
	case access.ReadOnly:
		if write = ours == nil || !ours.isFence(b.bucket); write {
			next = p.render(append(others, fence(b.bucket)))
		}
	case access.ReadWrite:
		if write = ours != nil; write && len(others) > 0 {
			next = p.render(others)
		} // else "" deletes the policy: nothing but the fence was in it
	}
	if mode == access.ReadWrite && b.admin != nil {
		if err := b.unfenceIAM(c, what); err != nil {
			return err
		}
	}
	if write {
		if err := b.client.SetBucketPolicy(c.ctx, b.bucket, next); err != nil {
			return c.classify(what+": write bucket policy", err)
		}
	}
	if mode == access.ReadOnly && b.admin != nil {
		return b.fenceIAM(c, what)
	}
	return nil
}

// Status reports read-only when drorch's deny statement is in the bucket
// policy, whatever else the policy says, and, with users or groups, the IAM
// policy is attached to each of them; read-write when neither is the case.
// Anything in between is a transient error that names what is fenced and
// what is not: setting the mode again finishes the switch.
func (b *bucket) Status(ctx context.Context) (access.Mode, error) {
	what := "status of " + b.describe
	c := b.call(ctx)
	defer c.cancel()
	raw, err := b.client.GetBucketPolicy(c.ctx, b.bucket)
	if err != nil {
		return "", c.classify(what+": read bucket policy", err)
	}
	p, err := parsePolicy(raw)
	if err != nil {
		return "", drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("%s: %w", what, err))
	}
	ours, _ := p.split()
	bucketFenced := ours != nil && strings.EqualFold(ours.Effect, "Deny")
	if b.admin == nil {
		if bucketFenced {
			return access.ReadOnly, nil
		}
		return access.ReadWrite, nil
	}
	fenced, open, err := b.iamStatus(c, what)
	if err != nil {
		return "", err
	}
	if bucketFenced {
		fenced = append([]string{"the bucket policy"}, fenced...)
	} else {
		open = append([]string{"the bucket policy"}, open...)
	}
	switch {
	case len(open) == 0:
		return access.ReadOnly, nil
	case len(fenced) == 0:
		return access.ReadWrite, nil
	}
	return "", fmt.Errorf("%s: partly fenced: the fence is on %s but not on %s; set the mode again to finish the switch",
		what, strings.Join(fenced, ", "), strings.Join(open, ", "))
}

// policy is a bucket policy document. Statements other than drorch's are kept
// as the raw JSON the server returned, so nothing in them is lost.
type policy struct {
	fields     map[string]json.RawMessage // every top-level field but Statement
	statements []json.RawMessage
}

// statement is what drorch reads of a statement.
type statement struct {
	Sid       string
	Effect    string
	Principal json.RawMessage
	Action    stringOrList
	Resource  stringOrList
}

// stringOrList is a policy element that may be one string or a list of them.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return err
	}
	*s = list
	return nil
}

func parsePolicy(raw string) (*policy, error) {
	p := &policy{fields: map[string]json.RawMessage{}}
	if strings.TrimSpace(raw) == "" {
		return p, nil
	}
	if err := json.Unmarshal([]byte(raw), &p.fields); err != nil {
		return nil, fmt.Errorf("bucket policy is not a JSON object: %w", err)
	}
	st, ok := p.fields["Statement"]
	delete(p.fields, "Statement")
	if !ok {
		return p, nil
	}
	if st = bytes.TrimSpace(st); len(st) > 0 && st[0] == '{' {
		p.statements = []json.RawMessage{st} // a single statement need not be in a list
		return p, nil
	}
	if err := json.Unmarshal(st, &p.statements); err != nil {
		return nil, fmt.Errorf("bucket policy: Statement is neither an object nor a list: %w", err)
	}
	return p, nil
}

// split returns drorch's statement (nil when absent) and all the others.
func (p *policy) split() (ours *statement, others []json.RawMessage) {
	for _, raw := range p.statements {
		var s statement
		if json.Unmarshal(raw, &s) == nil && s.Sid == Sid {
			ours = &s
			continue
		}
		others = append(others, raw)
	}
	return ours, others
}

// render returns p's document with statements in place of its own.
func (p *policy) render(statements []json.RawMessage) string {
	doc := make(map[string]any, len(p.fields)+2)
	for k, v := range p.fields {
		doc[k] = v
	}
	if _, ok := doc["Version"]; !ok {
		doc["Version"] = policyVersion
	}
	doc["Statement"] = statements
	b, err := json.Marshal(doc)
	if err != nil {
		panic(fmt.Sprintf("s3bucket: marshal a policy of valid JSON parts: %v", err)) // cannot happen
	}
	return string(b)
}

func fence(bucket string) json.RawMessage {
	b, err := json.Marshal(map[string]any{
		"Sid":       Sid,
		"Effect":    "Deny",
		"Principal": "*",
		"Action":    deniedActions,
		"Resource":  []string{objects(bucket)},
	})
	if err != nil {
		panic(fmt.Sprintf("s3bucket: marshal the fence statement: %v", err)) // cannot happen
	}
	return b
}

func objects(bucket string) string { return "arn:aws:s3:::" + bucket + "/*" }

// isFence reports whether s is the fence drorch sets now, in whatever form
// the server returns it; a statement from an older drorch, or one edited by
// hand, is replaced.
func (s *statement) isFence(bucket string) bool {
	if !strings.EqualFold(s.Effect, "Deny") || !everyone(s.Principal) {
		return false
	}
	return sameSet(s.Action, deniedActions) && sameSet(s.Resource, []string{objects(bucket)})
}

// everyone reports whether a Principal element is "*", {"AWS": "*"} or {"AWS": ["*"]}.
func everyone(raw json.RawMessage) bool {
	var star string
	if json.Unmarshal(raw, &star) == nil {
		return star == "*"
	}
	var m map[string]stringOrList
	if json.Unmarshal(raw, &m) != nil || len(m) != 1 {
		return false
	}
	aws, ok := m["AWS"]
	return ok && slices.Equal(aws, []string{"*"})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// call is one SetMode or Status call: its deadline, and whether the server
// answered anything during it, which tells an unreachable server from one
// that failed.
type call struct {
	timeout  time.Duration
	ctx      context.Context
	parent   context.Context
	cancel   context.CancelFunc
	answered atomic.Bool
	status   atomic.Int32 // of the last admin API response; madmin's errors lack it
}

// callKey holds the *call in its context, for recordStatus.
type callKey struct{}

func (b *bucket) call(parent context.Context) *call {
	c := &call{parent: parent, timeout: b.timeout}
	ctx, cancel := context.WithTimeout(parent, b.timeout)
	ctx = context.WithValue(ctx, callKey{}, c)
	c.ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotFirstResponseByte: func() { c.answered.Store(true) },
	})
	c.cancel = cancel
	return c
}

// classify turns an error from minio-go into drorch's classes, with a message
// that names the operation and the bucket but never a credential.
func (c *call) classify(what string, err error) error {
	if c.parent.Err() != nil {
		return fmt.Errorf("%s: %w", what, err) // the caller gave up; not the server's doing
	}
	if hint := tlsMismatch(err); hint != "" {
		return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %s: %w", what, hint, err))
	}
	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return drivers.Permanentf(drivers.ReasonAuth,
			"%s: the access key or secret key is wrong (%s)", what, resp.Code)
	case "AccessDenied":
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"%s: access denied: these credentials need s3:GetBucketPolicy, s3:PutBucketPolicy and s3:DeleteBucketPolicy on the bucket (%s)", what, resp.Code)
	case "AllAccessDisabled", "AccountProblem":
		return drivers.Permanentf(drivers.ReasonAccessDenied, "%s: access denied: %s (%s)", what, resp.Message, resp.Code)
	case "NoSuchBucket":
		return drivers.Permanentf(drivers.ReasonNoSuchBucket, "%s: the bucket does not exist (NoSuchBucket)", what)
	case "MalformedPolicy":
		return drivers.Permanentf(drivers.ReasonInvalidInput,
			"%s: the server refused the bucket policy: %s (MalformedPolicy)", what, resp.Message)
	}
	return c.classifyByStatus(what, resp.Code, resp.StatusCode, err)
}

// classifyByStatus classifies an error that no code of its own explains:
// by the HTTP status of the server's answer, or by there being none.
func (c *call) classifyByStatus(what, code string, status int, err error) error {
	if st := status; s3client.Permanent(code, st) {
		reason := code
		if reason == "" || strings.ContainsRune(reason, ' ') {
			reason = fmt.Sprintf("HTTP%d", st)
		}
		return drivers.Permanent(reason, fmt.Errorf("%s: %w", what, err))
	}
	if status == 0 && !c.answered.Load() {
		// No HTTP answer during the whole call, retries included: the
		// connection was refused, never completed or never answered.
		if errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s: %w: no answer within %s: %w", what, drivers.ErrUnreachable, c.timeout, err)
		}
		return fmt.Errorf("%s: %w: %w", what, drivers.ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// tlsMismatch is s3client.TLSMismatch, also for the admin client's errors.
func tlsMismatch(err error) string {
	if hint := s3client.TLSMismatch(err); hint != "" {
		return hint
	}
	if strings.Contains(madmin.ToErrorResponse(err).Message, "HTTP request to an HTTPS server") {
		return "the server speaks HTTPS (unset insecure)"
	}
	return ""
}
