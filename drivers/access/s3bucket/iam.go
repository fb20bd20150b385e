package s3bucket

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/s3client"
)

// The IAM half of the fence, for MinIO, which applies bucket policies to
// anonymous requests only (see the package doc).

// PolicyName is the canned IAM policy that fences bucket on MinIO.
func PolicyName(bucket string) string { return "drorch-read-only-" + bucket }

// identity is a MinIO IAM user or group the fence reaches.
type identity struct {
	name  string
	group bool
}

func (id identity) String() string {
	if id.group {
		return "group " + id.name
	}
	return "user " + id.name
}

func (id identity) association(policy string) madmin.PolicyAssociationReq {
	r := madmin.PolicyAssociationReq{Policies: []string{policy}}
	if id.group {
		r.Group = id.name
	} else {
		r.User = id.name
	}
	return r
}

// describeIdentities is the tail of Describe naming the fenced identities,
// e.g. " (users app, ci; groups writers)".
func describeIdentities(users, groups []string) string {
	var parts []string
	if len(users) > 0 {
		parts = append(parts, "users "+strings.Join(users, ", "))
	}
	if len(groups) > 0 {
		parts = append(parts, "groups "+strings.Join(groups, ", "))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// newAdmin returns a client of MinIO's admin API, reached as the S3 client
// reaches the server. The admin API encrypts its request and response bodies
// with the secret key, which is why drorch uses MinIO's own client for it.
func newAdmin(cfg Config) (*madmin.AdminClient, error) {
	tr, err := s3client.Transport(s3client.Options{Insecure: cfg.Insecure, CAFile: cfg.CAFile, DialTimeout: min(dialTimeout, cfg.Timeout)})
	if err != nil {
		return nil, err
	}
	return madmin.NewWithOptions(cfg.Endpoint, &madmin.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey.Value(), cfg.SecretKey.Value(), ""),
		Secure:    !cfg.Insecure,
		Transport: recordStatus{tr},
	})
}

// recordStatus notes the HTTP status of each admin API response in the call
// the request belongs to, so that an error can be classified by it.
type recordStatus struct{ next http.RoundTripper }

func (r recordStatus) RoundTrip(req *http.Request) (*http.Response, error) {
	c, _ := req.Context().Value(callKey{}).(*call)
	if c != nil {
		c.status.Store(0) // no answer to this request, whatever the last one got
	}
	resp, err := r.next.RoundTrip(req)
	if c != nil && resp != nil {
		c.status.Store(int32(resp.StatusCode))
	}
	return resp, err
}

// iamFence is the canned policy's document: a deny of the object writes the
// bucket statement denies too.
func iamFence(bucket string) []byte {
	b, err := json.Marshal(map[string]any{
		"Version": policyVersion,
		"Statement": []map[string]any{{
			"Sid":      Sid,
			"Effect":   "Deny",
			"Action":   deniedActions,
			"Resource": []string{objects(bucket)},
		}},
	})
	if err != nil {
		panic(fmt.Sprintf("s3bucket: marshal the IAM fence: %v", err)) // cannot happen
	}
	return b
}

// isIAMFence reports whether raw is the policy iamFence makes, in whatever
// form the server returns it. A statement with anything more (a Condition,
// say) may deny less, so it does not count.
func isIAMFence(raw []byte, bucket string) bool {
	p, err := parsePolicy(string(raw))
	if err != nil || len(p.statements) != 1 {
		return false
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(p.statements[0], &fields) != nil {
		return false
	}
	for k := range fields {
		if !slices.Contains([]string{"Sid", "Effect", "Action", "Resource"}, k) {
			return false
		}
	}
	var s statement
	if json.Unmarshal(p.statements[0], &s) != nil {
		return false
	}
	return strings.EqualFold(s.Effect, "Deny") &&
		sameSet(s.Action, deniedActions) && sameSet(s.Resource, []string{objects(bucket)})
}

// fenceIAM makes sure the canned policy says what drorch wants, rewriting
// one edited by hand (Status looks at attachments only), and attaches it to
// every listed identity.
func (b *bucket) fenceIAM(c *call, what string) error {
	info, err := b.admin.InfoCannedPolicyV2(c.ctx, b.policy)
	switch {
	case err == nil && isIAMFence(info.Policy, b.bucket):
	case err == nil || madmin.ToErrorResponse(err).Code == "XMinioAdminNoSuchPolicy":
		if err := b.admin.AddCannedPolicy(c.ctx, b.policy, iamFence(b.bucket)); err != nil {
			return c.classifyAdmin(fmt.Sprintf("%s: write IAM policy %s", what, b.policy), "admin:CreatePolicy", nil, err)
		}
	default:
		return c.classifyAdmin(fmt.Sprintf("%s: read IAM policy %s", what, b.policy), "admin:GetPolicy", nil, err)
	}
	for _, id := range b.identities {
		if _, err := b.admin.AttachPolicy(c.ctx, id.association(b.policy)); err != nil && !alreadyApplied(err) {
			return c.classifyAdmin(fmt.Sprintf("%s: attach IAM policy %s to %s", what, b.policy, id),
				"admin:AttachUserOrGroupPolicy", &id, err)
		}
	}
	return nil
}

// unfenceIAM detaches the canned policy from every listed identity. The
// policy itself stays: it denies nothing while attached to no one.
func (b *bucket) unfenceIAM(c *call, what string) error {
	for _, id := range b.identities {
		if _, err := b.admin.DetachPolicy(c.ctx, id.association(b.policy)); err != nil && !alreadyApplied(err) {
			return c.classifyAdmin(fmt.Sprintf("%s: detach IAM policy %s from %s", what, b.policy, id),
				"admin:AttachUserOrGroupPolicy", &id, err)
		}
	}
	return nil
}

// alreadyApplied reports whether MinIO refused an attach or detach because
// it would change nothing: the policy is already attached, or not attached.
func alreadyApplied(err error) bool {
	return madmin.ToErrorResponse(err).Code == "XMinioAdminPolicyChangeAlreadyApplied"
}

// iamStatus returns the listed identities the canned policy is attached to
// and those it is not.
func (b *bucket) iamStatus(c *call, what string) (fenced, open []string, err error) {
	for _, id := range b.identities {
		var (
			policies string
			err      error
			need     string
		)
		if id.group {
			need = "admin:GetGroup"
			var g *madmin.GroupDesc
			if g, err = b.admin.GetGroupDescription(c.ctx, id.name); err == nil {
				policies = g.Policy
			}
		} else {
			need = "admin:GetUser"
			var u madmin.UserInfo
			if u, err = b.admin.GetUserInfo(c.ctx, id.name); err == nil {
				policies = u.PolicyName
			}
		}
		if err != nil {
			return nil, nil, c.classifyAdmin(fmt.Sprintf("%s: read the policies of %s", what, id), need, &id, err)
		}
		if slices.Contains(strings.Split(policies, ","), b.policy) {
			fenced = append(fenced, id.String())
		} else {
			open = append(open, id.String())
		}
	}
	return fenced, open, nil
}

// classifyAdmin turns an error from madmin into drorch's classes. need names
// the admin permission the call takes; id, when not nil, the identity it is
// about.
func (c *call) classifyAdmin(what, need string, id *identity, err error) error {
	if c.parent.Err() != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if hint := tlsMismatch(err); hint != "" {
		return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %s: %w", what, hint, err))
	}
	resp := madmin.ToErrorResponse(err)
	switch resp.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return drivers.Permanentf(drivers.ReasonAuth,
			"%s: the access key or secret key is wrong (%s)", what, resp.Code)
	case "AccessDenied":
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"%s: access denied: these credentials need %s on the MinIO server (users and groups work with MinIO only) (%s)",
			what, need, resp.Code)
	case "XMinioAdminNoSuchUser", "XMinioAdminNoSuchGroup":
		if id != nil {
			return drivers.Permanentf(drivers.ReasonInvalidConfig,
				"%s: there is no %s on the server: list MinIO's built-in IAM users and groups, not the root user nor LDAP or OpenID identities (%s)",
				what, id, resp.Code)
		}
	case "XMinioIAMActionNotAllowed":
		if id != nil {
			return drivers.Permanentf(drivers.ReasonInvalidConfig,
				"%s: MinIO attaches no policy to %s: the root user, service accounts and temporary credentials cannot be fenced (%s)",
				what, id, resp.Code)
		}
	case "XMinioAdminInvalidArgument", "XMinioInvalidResource":
		if id != nil {
			return drivers.Permanentf(drivers.ReasonInvalidConfig, "%s: MinIO refused the name of %s: %s (%s)", what, id, resp.Message, resp.Code)
		}
	}
	return c.classifyByStatus(what, resp.Code, int(c.status.Load()), err)
}
