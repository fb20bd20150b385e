package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const switching = valid + `    access:
      primary:
        - {driver: postgres, host: 127.0.0.1, port: 5433, user: drorch, password: env:DRORCH_PG_PASSWORD, database: app, roles: [app, reports]}
        - {driver: s3bucket, endpoint: 127.0.0.1:9001, bucket: app-data, accessKey: env:DRORCH_PRIMARY_ACCESS_KEY, secretKey: env:DRORCH_PRIMARY_SECRET_KEY, insecure: true, users: [app, ci], groups: [writers]}
      secondary:
        - {driver: exec, setMode: [/usr/local/bin/app-mode, --site, b], status: [/usr/local/bin/app-mode, --status], timeout: 20s}
        - {driver: http, url: "https://lb.example/mode", headers: {Authorization: env:DRORCH_LB_TOKEN}}
    dns:
      - server: 127.0.0.1:5353
        zone: example.test
        name: app
        type: A
        values: {primary: 192.0.2.10, secondary: [198.51.100.10, 198.51.100.11]}
        tsig: {name: drorch-key, secret: env:DRORCH_TSIG}
    steps:
      - name: check-health
        on: [failover, drill]
        before: [{exec: [/usr/local/bin/check, app]}, {http: "http://127.0.0.1:8080/health"}]
        wait: 30s
      - name: ops-approval
        approval: {timeout: 2h}
    failover: {darkAfter: 5s}
    failback: {lagThreshold: 2m, autoComplete: true}
`

func TestParseSwitching(t *testing.T) {
	setSecrets(t)
	t.Setenv("DRORCH_PG_PASSWORD", "pg-secret-value")
	t.Setenv("DRORCH_LB_TOKEN", "Bearer lb-secret-value")
	t.Setenv("DRORCH_TSIG", "c2VjcmV0LXRzaWctdmFsdWU=")
	cfg, err := Parse("drorch.yaml", []byte(switching))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Plans["files"]
	if a := p.Access["primary"]; len(a) != 2 || a[0].Driver != "postgres" || a[0].Port != 5433 || a[0].Password.Value() != "pg-secret-value" || a[1].Bucket != "app-data" ||
		strings.Join(a[1].Users, ",") != "app,ci" || strings.Join(a[1].Groups, ",") != "writers" {
		t.Fatalf("access at primary: %+v", a)
	}
	if a := p.Access["secondary"]; len(a) != 2 || strings.Join(a[0].SetMode, " ") != "/usr/local/bin/app-mode --site b" || a[0].Timeout != 20*time.Second ||
		a[1].Headers["Authorization"].Value() != "Bearer lb-secret-value" {
		t.Fatalf("access at secondary: %+v", a)
	}
	r := p.DNS[0]
	if r.Driver != "rfc2136" || r.TTL != DefaultDNSTTL || r.TSIG.Algorithm != DefaultTSIGAlgorithm ||
		strings.Join(r.Values["primary"], ",") != "192.0.2.10" || strings.Join(r.Values["secondary"], ",") != "198.51.100.10,198.51.100.11" {
		t.Fatalf("dns: %+v", r)
	}
	if s := p.Steps; len(s) != 2 || s[0].Wait != 30*time.Second || len(s[0].Before) != 2 || !s[0].RunsOn("drill") || s[0].RunsOn("failback") ||
		s[1].Approval.Timeout != 2*time.Hour || !s[1].RunsOn("failback") {
		t.Fatalf("steps: %+v", s)
	}
	if a := p.Access["primary"][0]; strings.Join(a.Roles, ",") != "app,reports" {
		t.Fatalf("postgres roles: %q", a.Roles)
	}
	if p.Failover.DarkAfter != 5*time.Second {
		t.Fatalf("failover: %+v", p.Failover)
	}
	if p.Failback.LagThreshold != 2*time.Minute || !p.Failback.AutoComplete || p.Failback.Interval != DefaultFailbackInterval {
		t.Fatalf("failback: %+v", p.Failback)
	}
	for _, printed := range []string{fmtAll(cfg), fmtAll(p), fmtAll(*p.Access["primary"][0]), fmtAll(*p.DNS[0])} {
		for _, secret := range []string{"pg-secret-value", "lb-secret-value", "c2VjcmV0LXRzaWctdmFsdWU="} {
			if strings.Contains(printed, secret) {
				t.Fatalf("a printed config shows a secret: %s", printed)
			}
		}
	}
}

func TestParseSwitchingErrors(t *testing.T) {
	setSecrets(t)
	t.Setenv("DRORCH_PG_PASSWORD", "x")
	t.Setenv("DRORCH_LB_TOKEN", "x")
	t.Setenv("DRORCH_TSIG", "eA==")
	cases := []struct{ old, new, want string }{
		{"{driver: postgres, host: 127.0.0.1,", "{driver: postgres, bucket: b, host: 127.0.0.1,", "plans.files.access.primary[0].bucket: not a setting of the postgres driver"},
		{"{driver: postgres,", "{driver: mysql,", "plans.files.access.primary[0].driver: must be one of exec, http, postgres, s3bucket"},
		{"user: drorch, password: env:DRORCH_PG_PASSWORD,", "user: drorch,", "plans.files.access.primary[0].password: required"},
		{"password: env:DRORCH_PG_PASSWORD", "password: hunter2", "plans.files.access.primary[0].password: must be a reference"},
		{"users: [app, ci]", `users: [app, ""]`, `plans.files.access.primary[1].users[1]: must be a MinIO IAM user name, got ""`},
		{"groups: [writers]", `groups: [" "]`, `plans.files.access.primary[1].groups[0]: must be a MinIO IAM group name, got " "`},
		{"users: [app, ci]", "users: {name: app}", "plans.files.access.primary[1].users: must be a list, got a mapping"},
		{"database: app,", "database: app, groups: [writers],", "plans.files.access.primary[0].groups: not a setting of the postgres driver"},
		{"status: [/usr/local/bin/app-mode, --status], ", "", "plans.files.access.secondary[0].status: required"},
		{`url: "https://lb.example/mode"`, `url: "lb.example/mode"`, "plans.files.access.secondary[1].url: must be an http:// or https:// URL"},
		{"timeout: 20s", "timeout: soon", `plans.files.access.secondary[0].timeout: must be a duration such as 30s`},
		{"primary: 192.0.2.10,", "primary: 2001:db8::1,", `plans.files.dns[0].values.primary[0]: must be an IPv4 address, got "2001:db8::1"`},
		{"values: {primary: 192.0.2.10, ", "values: {", "plans.files.dns[0].values.primary: required"},
		{"type: A", "type: MX", `plans.files.dns[0].type: must be A, AAAA or CNAME, got "MX"`},
		{"server: 127.0.0.1:5353", "server: 127.0.0.1", `plans.files.dns[0].server: must be host:port`},
		{"tsig: {name: drorch-key, secret: env:DRORCH_TSIG}", "tsig: {name: drorch-key}", "plans.files.dns[0].tsig.secret: required"},
		{"on: [failover, drill]", "on: [failover, switchover]", `plans.files.steps[0].on[1]: must be one of failover, failback, drill, got "switchover"`},
		{"approval: {timeout: 2h}", "wait: 0s", "plans.files.steps[1]: does nothing"},
		{"name: ops-approval", "name: check-health", `plans.files.steps[1].name: another step is named "check-health"`},
		{`{http: "http://127.0.0.1:8080/health"}`, `{}`, "plans.files.steps[0].before[1]: required: exec (a command) or http (a URL)"},
		{"access:\n      primary:", "access:\n      moon: []\n      primary:", `plans.files.access.moon: "moon" is not a site of this plan`},
		{"database: app, roles: [app, reports]}", "database: app}", "plans.files.access.primary[0].roles: required: the application's login roles"},
		{"roles: [app, reports]", "roles: [app, drorch]", `plans.files.access.primary[0].roles[1]: "drorch" is the user drorch connects as`},
		{"roles: [app, reports]", "roles: [app, app]", `plans.files.access.primary[0].roles[1]: "app" is listed twice`},
		{"roles: [app, reports]", "roles: [app, pg_monitor]", `plans.files.access.primary[0].roles[1]: "pg_monitor" is not a login role`},
		{"roles: [app, reports]", `roles: [app, ""]`, `plans.files.access.primary[0].roles[1]: must be a role name`},
		{"darkAfter: 5s", "darkAfter: 100ms", "plans.files.failover.darkAfter: must be 1s to 10m, got 100ms"},
		{"darkAfter: 5s", "darkAfter: 5", "plans.files.failover.darkAfter: must be a duration"},
		{"lagThreshold: 2m", "lagTreshold: 2m", "plans.files.failback.lagTreshold: unknown key; allowed: lagThreshold, interval, autoComplete"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			if !strings.Contains(switching, tc.old) {
				t.Fatalf("%q is not in the config", tc.old)
			}
			_, err := Parse("drorch.yaml", []byte(strings.Replace(switching, tc.old, tc.new, 1)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows an inline secret: %v", err)
			}
		})
	}
}

// fmtAll prints v under every verb that could show a field.
func fmtAll(v any) string {
	return fmt.Sprintf("%v %+v %s %#v", v, v, v, v)
}
