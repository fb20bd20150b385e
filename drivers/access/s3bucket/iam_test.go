package s3bucket

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/drivers/access/accesstest"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
)

// rootAdmin returns an admin client with m's root credentials.
func rootAdmin(t *testing.T, m *testenv.MinIO) *madmin.AdminClient {
	t.Helper()
	adm, err := madmin.NewWithOptions(m.Endpoint, &madmin.Options{
		Creds: credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
	})
	if err != nil {
		t.Fatal(err)
	}
	return adm
}

// addApp adds an application's user with MinIO's built-in readwrite policy,
// which lets it write to every bucket, and returns a client signed as it.
func addApp(t *testing.T, m *testenv.MinIO, name string) *minio.Client {
	t.Helper()
	ctx := testCtx(t)
	adm := rootAdmin(t, m)
	secretKey := name + "-secret-1"
	if err := adm.AddUser(ctx, name, secretKey); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{"readwrite"}, User: name}); err != nil {
		t.Fatal(err)
	}
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(name, secretKey, ""),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// addGroup makes group with members.
func addGroup(t *testing.T, m *testenv.MinIO, group string, members ...string) {
	t.Helper()
	if err := rootAdmin(t, m).UpdateGroupMembers(testCtx(t), madmin.GroupAddRemove{Group: group, Members: members}); err != nil {
		t.Fatal(err)
	}
}

// canWriteAll reports whether every client may put an object now, and
// fails when some may and some may not.
func canWriteAll(bucket string, clients map[string]*minio.Client) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		var yes, no []string
		for name, c := range clients {
			ok, err := canWrite(c, bucket)(ctx)
			if err != nil {
				return false, fmt.Errorf("%s: %w", name, err)
			}
			if ok {
				yes = append(yes, name)
			} else {
				no = append(no, name)
			}
		}
		if len(yes) > 0 && len(no) > 0 {
			return false, fmt.Errorf("writes accepted from %v but denied to %v", yes, no)
		}
		return len(no) == 0, nil
	}
}

// iamSetup is a MinIO server with an open bucket, the user app and the user
// member in the group writers, both allowed to write to every bucket.
type iamSetup struct {
	m       *testenv.MinIO
	app     *minio.Client
	member  *minio.Client
	writers map[string]*minio.Client // app, member and an anonymous client
}

func newIAMSetup(t *testing.T, bucket string) *iamSetup {
	t.Helper()
	m := testenv.StartMinIO(t)
	s := &iamSetup{m: m, app: addApp(t, m, "app"), member: addApp(t, m, "member")}
	anon := openBucket(t, m, bucket)
	addGroup(t, m, "writers", "member")
	s.writers = map[string]*minio.Client{"user app": s.app, "member of group writers": s.member, "anonymous": anon}
	return s
}

func (s *iamSetup) config(bucket string) Config {
	cfg := config(s.m, bucket)
	cfg.Users, cfg.Groups = []string{"app"}, []string{"writers"}
	return cfg
}

func TestIAMConformance(t *testing.T) {
	s := newIAMSetup(t, "fenced")
	a := mustNew(t, s.config("fenced"))
	if got, want := a.Describe(), "s3bucket "+s.m.Endpoint+"/fenced (users app; groups writers)"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	accesstest.Run(t, a, canWriteAll("fenced", s.writers))
}

func TestIAMFenceStopsSignedWritesButNotReads(t *testing.T) {
	s := newIAMSetup(t, "data")
	ctx := testCtx(t)
	if _, err := s.app.PutObject(ctx, "data", "kept", strings.NewReader("kept"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	a := mustNew(t, s.config("data"))
	for range 2 {
		if err := a.SetMode(ctx, access.ReadOnly); err != nil {
			t.Fatal(err)
		}
	}
	for name, c := range map[string]*minio.Client{"app": s.app, "member": s.member} {
		_, err := c.PutObject(ctx, "data", "new", strings.NewReader("new"), 3, minio.PutObjectOptions{})
		if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
			t.Errorf("put by %s while read-only: %v (code %q), want AccessDenied", name, err, code)
		}
		err = c.RemoveObject(ctx, "data", "kept", minio.RemoveObjectOptions{})
		if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
			t.Errorf("delete by %s while read-only: %v (code %q), want AccessDenied", name, err, code)
		}
		obj, err := c.GetObject(ctx, "data", "kept", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if _, err := got.ReadFrom(obj); err != nil || got.String() != "kept" {
			t.Errorf("read by %s while read-only = %q, %v; want %q", name, got.String(), err, "kept")
		}
	}
	if err := a.SetMode(ctx, access.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if _, err := s.app.PutObject(ctx, "data", "new", strings.NewReader("new"), 3, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put by app after read-write: %v", err)
	}
	// Read-write detaches drorch's policy and nothing else.
	info, err := rootAdmin(t, s.m).GetUserInfo(ctx, "app")
	if err != nil || info.PolicyName != "readwrite" {
		t.Fatalf("app's policies after read-write = %q, %v; want readwrite", info.PolicyName, err)
	}
}

// TestIAMHalfStateIsAnError: a switch cut short, or undone by hand in part,
// is never reported as either mode, and setting the mode again finishes it.
func TestIAMHalfStateIsAnError(t *testing.T) {
	s := newIAMSetup(t, "half")
	ctx := testCtx(t)
	adm := rootAdmin(t, s.m)
	a := mustNew(t, s.config("half"))

	if err := a.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DetachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{PolicyName("half")}, User: "app"}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Status(ctx)
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "on the bucket policy, group writers but not on user app") {
		t.Fatalf("Status with the policy detached from app = %q, %v; want an error naming what is fenced and what is not", got, err)
	}
	if _, perm := drivers.IsPermanent(err); perm || drivers.IsUnreachable(err) {
		t.Fatalf("Status of a half state = %v; want transient, not unreachable", err)
	}
	if err := a.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Status(ctx); err != nil || got != access.ReadOnly {
		t.Fatalf("Status after setting read-only again = %q, %v", got, err)
	}

	// Only the IAM policy, without the bucket statement.
	if err := a.SetMode(ctx, access.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{PolicyName("half")}, Group: "writers"}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Status(ctx); err == nil || !strings.Contains(err.Error(), "on group writers but not on the bucket policy, user app") {
		t.Fatalf("Status with the policy attached to writers only = %q, %v", got, err)
	}
}

// TestIAMPolicyIsRestored: a canned policy edited by hand is rewritten by
// the next read-only.
func TestIAMPolicyIsRestored(t *testing.T) {
	s := newIAMSetup(t, "edited")
	ctx := testCtx(t)
	adm := rootAdmin(t, s.m)
	weak := `{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":["s3:DeleteObject"],"Resource":["arn:aws:s3:::edited/*"]}]}`
	if err := adm.AddCannedPolicy(ctx, PolicyName("edited"), []byte(weak)); err != nil {
		t.Fatal(err)
	}
	if err := mustNew(t, s.config("edited")).SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if ok, err := canWriteAll("edited", s.writers)(ctx); ok || err != nil {
		t.Fatalf("write while read-only: accepted=%v, %v", ok, err)
	}
	info, err := adm.InfoCannedPolicyV2(ctx, PolicyName("edited"))
	if err != nil || !isIAMFence(info.Policy, "edited") {
		t.Fatalf("policy after read-only = %s, %v", info.Policy, err)
	}
	// The policy as MinIO returns it is drorch's: read-only again leaves it be.
	if err := mustNew(t, s.config("edited")).SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	again, err := adm.InfoCannedPolicyV2(ctx, PolicyName("edited"))
	if err != nil || !again.UpdateDate.Equal(info.UpdateDate) {
		t.Fatalf("read-only in force rewrote the policy: updated %s, then %s (%v)", info.UpdateDate, again.UpdateDate, err)
	}
}

func TestIAMErrors(t *testing.T) {
	s := newIAMSetup(t, "errs")
	ctx := testCtx(t)
	// fencer may do everything the fence takes but attach policies.
	s.m.AddUser(t, "fencer", "fencer-secret-1", `{
		"Version": "2012-10-17",
		"Statement": [
			{"Effect": "Allow", "Action": ["s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"],
			 "Resource": ["arn:aws:s3:::errs"]},
			{"Effect": "Allow", "Action": ["admin:GetPolicy", "admin:CreatePolicy", "admin:GetUser", "admin:GetGroup"]}
		]
	}`)
	const secretValue = "fencer-secret-1"

	cases := []struct {
		name   string
		cfg    func(Config) Config
		reason string
		want   string // in the error of SetMode(read-only)
		status bool   // Status fails the same way
	}{
		{"no such user", func(c Config) Config {
			c.Users = []string{"app", "ghost"}
			return c
		}, drivers.ReasonInvalidConfig, "there is no user ghost on the server", true},
		{"no such group", func(c Config) Config {
			c.Groups = []string{"nobody"}
			return c
		}, drivers.ReasonInvalidConfig, "there is no group nobody on the server", true},
		{"root user", func(c Config) Config {
			c.Users = []string{s.m.AccessKey}
			return c
		}, drivers.ReasonInvalidConfig, "user " + s.m.AccessKey, true},
		{"no AttachUserOrGroupPolicy", func(c Config) Config {
			c.AccessKey = secret.New("env:FENCER", "fencer")
			c.SecretKey = secret.New("env:FENCER_SECRET", secretValue)
			return c
		}, drivers.ReasonAccessDenied, "need admin:AttachUserOrGroupPolicy", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := mustNew(t, tc.cfg(s.config("errs")))
			check := func(op string, err error) {
				t.Helper()
				t.Log(err)
				reason, ok := drivers.IsPermanent(err)
				if !ok || reason != tc.reason || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s = %v; want permanent %s naming %q, got permanent=%v reason %q", op, err, tc.reason, tc.want, ok, reason)
				}
				if strings.Contains(err.Error(), secretValue) || strings.Contains(err.Error(), s.m.SecretKey) {
					t.Fatalf("error shows a secret: %v", err)
				}
			}
			check("SetMode(read-only)", a.SetMode(ctx, access.ReadOnly))
			if tc.status {
				_, err := a.Status(ctx)
				check("Status", err)
				check("SetMode(read-write)", a.SetMode(ctx, access.ReadWrite))
			}
		})
	}
}
