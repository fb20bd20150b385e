package config

import (
	"strings"
	"testing"
	"time"
)

const withSourceHooks = `primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}`

func TestParseSourceHooks(t *testing.T) {
	setSecrets(t)
	doc := strings.Replace(valid, withSourceHooks, `primary:
        driver: dir
        path: /srv/data
        hooks:
          pre: [{exec: [fsfreeze, -f, /srv/data], timeout: 10s}, {http: "http://127.0.0.1:8080/flush", method: POST}]
          post: [{exec: [fsfreeze, -u, /srv/data]}]`, 1)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Plans["files"].Source["primary"].Hooks
	if h == nil || len(h.Pre) != 2 || h.Pre[0].Timeout != 10*time.Second || h.Pre[1].Method != "POST" || len(h.Post) != 1 || h.Post[0].Exec[1] != "-u" {
		t.Fatalf("hooks = %+v", h)
	}
}

func TestParseSourceHooksErrors(t *testing.T) {
	setSecrets(t)
	cases := []struct{ hooks, want string }{
		{`{}`, "plans.files.source.primary.hooks: does nothing"},
		{`{pre: [{}]}`, "plans.files.source.primary.hooks.pre[0]: required: exec (a command) or http (a URL)"},
		{`{post: [{exec: [a], http: "http://x/"}]}`, "plans.files.source.primary.hooks.post[0]: give exec or http, not both"},
		{`{pre: [{http: "ftp://x/"}]}`, "plans.files.source.primary.hooks.pre[0].http: must be an http:// or https:// URL"},
		{`{pre: [{exec: [a], timeout: soon}]}`, "plans.files.source.primary.hooks.pre[0].timeout: must be a duration"},
		{`{during: [{exec: [a]}]}`, "plans.files.source.primary.hooks.during: unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			doc := strings.Replace(valid, withSourceHooks, `primary: {driver: dir, path: /srv/data, hooks: `+tc.hooks+`}`, 1)
			_, err := Parse("drorch.yaml", []byte(doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
