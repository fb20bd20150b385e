package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The secret values the tests use. No error and no printed config may hold one.
const (
	primaryAccess   = "AKIAPRIMARYACCESS0001"
	primarySecret   = "primary-secret-key-value-0001"
	secondaryAccess = "AKIASECONDARYACCESS02"
	secondarySecret = "secondary-secret-key-value-02"
	filesKey        = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	apiKey          = "temporal-api-key-value-03"
	inlineSecret    = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

var secretValues = []string{primaryAccess, primarySecret, secondaryAccess, secondarySecret, filesKey, apiKey, inlineSecret}

// valid is the example config. Cases below edit it, so its line numbers
// appear in the errors they expect.
const valid = `temporal:
  address: 127.0.0.1:7233
  namespace: default
sites:
  primary:
    store:
      driver: s3
      endpoint: 127.0.0.1:9001
      bucket: drorch
      accessKey: env:DRORCH_PRIMARY_ACCESS_KEY
      secretKey: env:DRORCH_PRIMARY_SECRET_KEY
      insecure: true
  secondary:
    store:
      driver: s3
      endpoint: 127.0.0.1:9002
      bucket: drorch
      accessKey: env:DRORCH_SECONDARY_ACCESS_KEY
      secretKey: env:DRORCH_SECONDARY_SECRET_KEY
      insecure: true
plans:
  files:
    primary: primary
    secondary: secondary
    source:
      primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}
      secondary: {driver: dir, path: /srv/data-standby}
    encryption: {key: env:DRORCH_FILES_KEY}
`

func setSecrets(t *testing.T) {
	t.Helper()
	t.Setenv("DRORCH_PRIMARY_ACCESS_KEY", primaryAccess)
	t.Setenv("DRORCH_PRIMARY_SECRET_KEY", primarySecret)
	t.Setenv("DRORCH_SECONDARY_ACCESS_KEY", secondaryAccess)
	t.Setenv("DRORCH_SECONDARY_SECRET_KEY", secondarySecret)
	t.Setenv("DRORCH_FILES_KEY", filesKey)
	t.Setenv("TEMPORAL_API_KEY", apiKey)
}

// edit replaces old by new in the valid config, once per pair.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	doc := valid
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(doc, pairs[i]) {
			t.Fatalf("edit: %q is not in the valid config", pairs[i])
		}
		doc = strings.Replace(doc, pairs[i], pairs[i+1], 1)
	}
	return doc
}

// problems parses doc, expects it to fail and returns the error's lines.
func problems(t *testing.T, doc string, opts ...Option) []string {
	t.Helper()
	cfg, err := Parse("drorch.yaml", []byte(doc), opts...)
	if err == nil {
		t.Fatalf("Parse succeeded, want an error; config: %+v", cfg)
	}
	if cfg != nil {
		t.Errorf("Parse returned a config with its error")
	}
	assertNoSecret(t, "error", err.Error())
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("error %q holds no *Error", err)
	}
	return strings.Split(err.Error(), "\n")
}

func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range secretValues {
		if strings.Contains(s, v) {
			t.Errorf("%s shows secret value %q: %s", what, v, s)
		}
	}
}

func TestParseValid(t *testing.T) {
	setSecrets(t)
	cfg, err := Parse("drorch.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != "drorch.yaml" {
		t.Errorf("File = %q", cfg.File)
	}
	if cfg.Temporal.Address != "127.0.0.1:7233" || cfg.Temporal.Namespace != "default" || cfg.Temporal.TLS.Enabled() || !cfg.Temporal.APIKey.IsZero() {
		t.Errorf("Temporal = %+v", cfg.Temporal)
	}
	p, err := cfg.Site("primary")
	if err != nil {
		t.Fatal(err)
	}
	want := Store{Driver: "s3", Endpoint: "127.0.0.1:9001", Bucket: "drorch", Region: "us-east-1", Insecure: true, Parallel: 8}
	got := p.Store
	if got.AccessKey.Value() != primaryAccess || got.SecretKey.Value() != primarySecret {
		t.Errorf("primary store keys not resolved")
	}
	if got.AccessKey.Ref() != "env:DRORCH_PRIMARY_ACCESS_KEY" {
		t.Errorf("AccessKey.Ref() = %q", got.AccessKey.Ref())
	}
	got.AccessKey, got.SecretKey = want.AccessKey, want.SecretKey
	if got != want || p.Name != "primary" {
		t.Errorf("site primary = %q %+v, want %+v", p.Name, got, want)
	}
	s, _ := cfg.Site("secondary")
	if s.Store.Endpoint != "127.0.0.1:9002" || s.Store.SecretKey.Value() != secondarySecret {
		t.Errorf("site secondary = %+v", s.Store)
	}

	plan, err := cfg.Plan("files")
	if err != nil {
		t.Fatal(err)
	}
	if plan.Name != "files" || plan.Primary != "primary" || plan.Secondary != "secondary" {
		t.Errorf("plan = %+v", plan)
	}
	if got := plan.Sites(); len(got) != 2 || got[0] != "primary" || got[1] != "secondary" {
		t.Errorf("Sites() = %v", got)
	}
	src, err := plan.SourceAt("primary")
	if err != nil {
		t.Fatal(err)
	}
	if *src != (Source{Driver: "dir", Path: "/srv/data", OnChange: "retry", Retries: 3}) {
		t.Errorf("source at primary = %+v", src)
	}
	src, err = plan.SourceAt("secondary")
	if err != nil {
		t.Fatal(err)
	}
	if *src != (Source{Driver: "dir", Path: "/srv/data-standby", OnChange: "retry", Retries: 3}) {
		t.Errorf("source at secondary (defaults) = %+v", src)
	}
	key, err := plan.Encryption.KeyBytes()
	if err != nil || fmt.Sprintf("%x", key) != filesKey {
		t.Errorf("KeyBytes() = %x, %v", key, err)
	}

	if _, err := cfg.Plan("nope"); err == nil || !strings.Contains(err.Error(), `unknown plan "nope"; drorch.yaml defines: files`) {
		t.Errorf("Plan(nope) error = %v", err)
	}
	if _, err := cfg.Site("nope"); err == nil || !strings.Contains(err.Error(), `unknown site "nope"; drorch.yaml defines: primary, secondary`) {
		t.Errorf("Site(nope) error = %v", err)
	}
	if _, err := plan.SourceAt("nope"); err == nil || !strings.Contains(err.Error(), `plan files has no source at site "nope"`) {
		t.Errorf("SourceAt(nope) error = %v", err)
	}
}

func TestParseTemporalAndOptions(t *testing.T) {
	setSecrets(t)
	doc := edit(t, "  namespace: default\n", `  namespace: prod
  tls: {cert: /etc/drorch/client.pem, key: /etc/drorch/client.key, ca: /etc/drorch/ca.pem, serverName: temporal.example.com}
  apiKey: env:TEMPORAL_API_KEY
`,
		"      insecure: true\n  secondary:", `      prefix: dr/prod
      region: eu-west-1
      caFile: /etc/drorch/minio-ca.pem
      parallel: 32
  secondary:`)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := TLS{Cert: "/etc/drorch/client.pem", Key: "/etc/drorch/client.key", CA: "/etc/drorch/ca.pem", ServerName: "temporal.example.com"}
	if cfg.Temporal.Namespace != "prod" || cfg.Temporal.TLS != want || cfg.Temporal.APIKey.Value() != apiKey {
		t.Errorf("Temporal = %+v", cfg.Temporal)
	}
	st := cfg.Sites["primary"].Store
	if st.Prefix != "dr/prod" || st.Region != "eu-west-1" || st.CAFile != "/etc/drorch/minio-ca.pem" || st.Parallel != 32 || st.Insecure {
		t.Errorf("primary store = %+v", st)
	}
}

func TestParseEmptyStringsAndNullsKeepDefaults(t *testing.T) {
	setSecrets(t)
	doc := edit(t, "      bucket: drorch\n", "      bucket: drorch\n      region: \"\"\n      prefix: \"\"\n      caFile:\n      parallel: ~\n",
		"temporal:\n  address: 127.0.0.1:7233\n  namespace: default\n", "temporal:\n")
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Sites["primary"].Store
	if st.Region != DefaultStoreRegion || st.Parallel != DefaultStoreParallel || st.Prefix != "" {
		t.Errorf("store = %+v", st)
	}
	if cfg.Temporal.Address != DefaultTemporalAddress || cfg.Temporal.Namespace != DefaultTemporalNamespace {
		t.Errorf("temporal = %+v", cfg.Temporal)
	}
}

func TestParseAnchorsAndMergeKeys(t *testing.T) {
	setSecrets(t)
	doc := `x-store: &store
  driver: s3
  bucket: drorch
  parallel: 16
sites:
  primary:
    store:
      <<: *store
      endpoint: 127.0.0.1:9001
      accessKey: env:DRORCH_PRIMARY_ACCESS_KEY
      secretKey: env:DRORCH_PRIMARY_SECRET_KEY
  secondary:
    store:
      <<: *store
      endpoint: 127.0.0.1:9002
      parallel: 4
      accessKey: env:DRORCH_SECONDARY_ACCESS_KEY
      secretKey: env:DRORCH_SECONDARY_SECRET_KEY
plans:
  files: {primary: primary, secondary: secondary, source: {primary: {driver: dir, path: /srv/data}}}
`
	// x- keys are not allowed: a config holds only what drorch reads.
	got := problems(t, doc)
	want := []string{"drorch.yaml:1: x-store: unknown key; allowed: temporal, sites, plans"}
	assertLines(t, got, want)

	doc = strings.Replace(doc, "x-store: &store\n  driver: s3\n  bucket: drorch\n  parallel: 16\n", "", 1)
	doc = strings.Replace(doc, "    store:\n      <<: *store\n      endpoint: 127.0.0.1:9001", "    store: &store\n      driver: s3\n      bucket: drorch\n      parallel: 16\n      endpoint: 127.0.0.1:9001", 1)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	p, s := cfg.Sites["primary"].Store, cfg.Sites["secondary"].Store
	if s.Driver != "s3" || s.Bucket != "drorch" || s.Endpoint != "127.0.0.1:9002" || s.Parallel != 4 || p.Parallel != 16 {
		t.Errorf("merged stores = %+v / %+v", p, s)
	}
	if s.AccessKey.Value() != secondaryAccess {
		t.Errorf("merge overrode the secondary's own key")
	}
}

func assertLines(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestParseErrors(t *testing.T) {
	const minimal = "sites:\n  a:\n    store: {driver: s3, endpoint: h:1, bucket: bkt, accessKey: env:DRORCH_PRIMARY_ACCESS_KEY, secretKey: env:DRORCH_PRIMARY_SECRET_KEY}\n"
	cases := []struct {
		name string
		doc  func(t *testing.T) string
		want []string
	}{
		// temporal
		{"address without port", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:7233", "address: localhost") },
			[]string{`drorch.yaml:2: temporal.address: must be host:port, got "localhost"`}},
		{"address bad port", func(t *testing.T) string { return edit(t, "address: 127.0.0.1:7233", "address: localhost:99999") },
			[]string{`drorch.yaml:2: temporal.address: port must be a number from 1 to 65535, got "localhost:99999"`}},
		{"tls cert without key", func(t *testing.T) string {
			return edit(t, "  namespace: default\n", "  namespace: default\n  tls: {cert: /c.pem}\n")
		}, []string{`drorch.yaml:4: temporal.tls.key: required when tls.cert is set`}},
		{"tls key without cert", func(t *testing.T) string {
			return edit(t, "  namespace: default\n", "  namespace: default\n  tls:\n    key: /c.key\n")
		}, []string{`drorch.yaml:4: temporal.tls.cert: required when tls.key is set`}},

		// sites and plans
		{"empty file", func(*testing.T) string { return "" }, []string{
			`drorch.yaml: sites: at least one site is required`,
			`drorch.yaml: plans: at least one plan is required`}},
		{"only comments", func(*testing.T) string { return "# nothing yet\n" }, []string{
			`drorch.yaml: sites: at least one site is required`,
			`drorch.yaml: plans: at least one plan is required`}},
		{"no plans", func(*testing.T) string { return minimal }, []string{
			`drorch.yaml: plans: at least one plan is required`}},
		{"empty plans", func(*testing.T) string { return minimal + "plans: {}\n" }, []string{
			`drorch.yaml:4: plans: at least one plan is required`}},
		{"site name", func(t *testing.T) string { return edit(t, "  secondary:\n    store:", "  Secondary:\n    store:") }, []string{
			`drorch.yaml:13: sites.Secondary: site name must be 1 to 63 lowercase letters, digits, "_" and "-", starting with a letter or digit`,
			`drorch.yaml:24: plans.files.secondary: unknown site "secondary"; sites: Secondary, primary`}},
		{"plan name", func(t *testing.T) string { return edit(t, "  files:", "  -files:") }, []string{
			`drorch.yaml:22: plans.-files: plan name must be 1 to 63 lowercase letters, digits, "_" and "-", starting with a letter or digit`}},
		{"plan name too long", func(t *testing.T) string { return edit(t, "  files:", "  "+strings.Repeat("f", 64)+":") }, []string{
			`drorch.yaml:22: plans.` + strings.Repeat("f", 64) + `: plan name must be 1 to 63 lowercase letters, digits, "_" and "-", starting with a letter or digit`}},

		// store
		{"store driver", func(t *testing.T) string { return edit(t, "driver: s3", "driver: gcs") }, []string{
			`drorch.yaml:7: sites.primary.store.driver: unsupported store driver "gcs"; supported: s3`}},
		{"store driver missing", func(t *testing.T) string { return edit(t, "      driver: s3\n", "") }, []string{
			`drorch.yaml:6: sites.primary.store.driver: required; supported: s3`}},
		{"endpoint http scheme", func(t *testing.T) string { return edit(t, "127.0.0.1:9001", "http://127.0.0.1:9001") }, []string{
			`drorch.yaml:8: sites.primary.store.endpoint: must be host:port without a scheme; drop "http://" and set insecure: true for plain HTTP`}},
		{"endpoint https scheme", func(t *testing.T) string { return edit(t, "127.0.0.1:9001", "https://s3.example.com") }, []string{
			`drorch.yaml:8: sites.primary.store.endpoint: must be host:port without a scheme; drop "https://"`}},
		{"endpoint with path", func(t *testing.T) string { return edit(t, "127.0.0.1:9001", "s3.example.com/bucket") }, []string{
			`drorch.yaml:8: sites.primary.store.endpoint: must be host:port, got "s3.example.com/bucket"`}},
		{"endpoint missing", func(t *testing.T) string { return edit(t, "      endpoint: 127.0.0.1:9001\n", "") }, []string{
			`drorch.yaml:6: sites.primary.store.endpoint: required: the store's host:port`}},
		{"bucket uppercase", func(t *testing.T) string { return edit(t, "bucket: drorch", "bucket: DR_orch") }, []string{
			`drorch.yaml:9: sites.primary.store.bucket: must be 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit, got "DR_orch"`}},
		{"bucket short", func(t *testing.T) string { return edit(t, "bucket: drorch", "bucket: dr") }, []string{
			`drorch.yaml:9: sites.primary.store.bucket: must be 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit, got "dr"`}},
		{"bucket double dot", func(t *testing.T) string { return edit(t, "bucket: drorch", "bucket: dr..orch") }, []string{
			`drorch.yaml:9: sites.primary.store.bucket: must not contain two dots in a row, got "dr..orch"`}},
		{"bucket ip", func(t *testing.T) string { return edit(t, "bucket: drorch", "bucket: 192.168.1.10") }, []string{
			`drorch.yaml:9: sites.primary.store.bucket: must not look like an IP address, got "192.168.1.10"`}},
		{"bucket missing", func(t *testing.T) string { return edit(t, "      bucket: drorch\n", "") }, []string{
			`drorch.yaml:6: sites.primary.store.bucket: required`}},
		{"prefix leading slash", func(t *testing.T) string { return edit(t, "bucket: drorch\n", "bucket: drorch\n      prefix: /dr\n") }, []string{
			`drorch.yaml:10: sites.primary.store.prefix: must not start or end with "/", got "/dr"`}},
		{"prefix trailing slash", func(t *testing.T) string { return edit(t, "bucket: drorch\n", "bucket: drorch\n      prefix: dr/\n") }, []string{
			`drorch.yaml:10: sites.primary.store.prefix: must not start or end with "/", got "dr/"`}},
		{"prefix dot dot", func(t *testing.T) string {
			return edit(t, "bucket: drorch\n", "bucket: drorch\n      prefix: dr/../x\n")
		}, []string{
			`drorch.yaml:10: sites.primary.store.prefix: must not contain "." or ".." segments, got "dr/../x"`}},
		{"parallel zero", func(t *testing.T) string { return edit(t, "bucket: drorch\n", "bucket: drorch\n      parallel: 0\n") }, []string{
			`drorch.yaml:10: sites.primary.store.parallel: must be between 1 and 256, got 0`}},
		{"parallel too many", func(t *testing.T) string { return edit(t, "bucket: drorch\n", "bucket: drorch\n      parallel: 257\n") }, []string{
			`drorch.yaml:10: sites.primary.store.parallel: must be between 1 and 256, got 257`}},
		{"access key missing", func(t *testing.T) string { return edit(t, "      accessKey: env:DRORCH_PRIMARY_ACCESS_KEY\n", "") }, []string{
			`drorch.yaml:6: sites.primary.store.accessKey: required: a reference "env:NAME" or "file:PATH"`}},
		{"secret key empty", func(t *testing.T) string {
			return edit(t, "secretKey: env:DRORCH_SECONDARY_SECRET_KEY", `secretKey: ""`)
		}, []string{
			`drorch.yaml:19: sites.secondary.store.secretKey: required: a reference "env:NAME" or "file:PATH"`}},
		{"caFile with insecure", func(t *testing.T) string {
			return edit(t, "bucket: drorch\n", "bucket: drorch\n      caFile: /ca.pem\n")
		}, []string{
			`drorch.yaml:10: sites.primary.store.caFile: is for TLS, but insecure: true makes the store plain HTTP; drop one of them`}},

		// plan
		{"primary unknown", func(t *testing.T) string {
			return edit(t, "primary: primary\n    secondary", "primary: tertiary\n    secondary")
		}, []string{
			`drorch.yaml:23: plans.files.primary: unknown site "tertiary"; sites: primary, secondary`,
			`drorch.yaml:25: plans.files.source: required at the primary site: add source.tertiary`,
			`drorch.yaml:26: plans.files.source.primary: "primary" is not a site of this plan; its sites are tertiary, secondary`}},
		{"secondary missing", func(t *testing.T) string { return edit(t, "    secondary: secondary\n", "") }, []string{
			`drorch.yaml:22: plans.files.secondary: required: the name of a site; sites: primary, secondary`,
			`drorch.yaml:26: plans.files.source.secondary: "secondary" is not a site of this plan; its sites are primary`}},
		{"primary equals secondary", func(t *testing.T) string {
			return edit(t, "    secondary: secondary\n", "    secondary: primary\n", "      secondary: {driver: dir, path: /srv/data-standby}\n", "")
		}, []string{
			`drorch.yaml:24: plans.files.secondary: must differ from primary (both are "primary")`}},
		{"source at foreign site", func(t *testing.T) string {
			return edit(t, "      secondary: {driver: dir", "      tertiary: {driver: dir")
		}, []string{
			`drorch.yaml:27: plans.files.source.tertiary: "tertiary" is not a site of this plan; its sites are primary, secondary`}},
		{"source missing at primary", func(t *testing.T) string {
			return edit(t, "      primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}\n", "")
		}, []string{
			`drorch.yaml:25: plans.files.source: required at the primary site: add source.primary`}},
		{"no source at all", func(t *testing.T) string {
			return edit(t, "    source:\n      primary: {driver: dir, path: /srv/data, onChange: retry, retries: 3}\n      secondary: {driver: dir, path: /srv/data-standby}\n", "")
		}, []string{
			`drorch.yaml:22: plans.files.source: required at the primary site: add source.primary`}},
		{"source driver", func(t *testing.T) string {
			return edit(t, "{driver: dir, path: /srv/data,", "{driver: zfs, path: /srv/data,")
		}, []string{
			`drorch.yaml:26: plans.files.source.primary.driver: unsupported source driver "zfs"; supported: dir, exec, postgres`}},
		{"source driver missing", func(t *testing.T) string { return edit(t, "{driver: dir, path: /srv/data,", "{path: /srv/data,") }, []string{
			`drorch.yaml:26: plans.files.source.primary.driver: required; supported: dir, exec, postgres`}},
		{"path relative", func(t *testing.T) string { return edit(t, "path: /srv/data,", "path: srv/data,") }, []string{
			`drorch.yaml:26: plans.files.source.primary.path: must be an absolute path, got "srv/data"`}},
		{"path not clean", func(t *testing.T) string { return edit(t, "path: /srv/data,", "path: /srv//data/,") }, []string{
			`drorch.yaml:26: plans.files.source.primary.path: must be a clean path ("/srv/data"), got "/srv//data/"`}},
		{"path root", func(t *testing.T) string { return edit(t, "path: /srv/data,", "path: /,") }, []string{
			`drorch.yaml:26: plans.files.source.primary.path: must not be "/"`}},
		{"path missing", func(t *testing.T) string { return edit(t, "path: /srv/data-standby", "onChange: fail") }, []string{
			`drorch.yaml:27: plans.files.source.secondary.path: required: an absolute path`}},
		{"onChange", func(t *testing.T) string { return edit(t, "onChange: retry", "onChange: ignore") }, []string{
			`drorch.yaml:26: plans.files.source.primary.onChange: must be one of retry, fail, got "ignore"`}},
		{"retries too many", func(t *testing.T) string { return edit(t, "retries: 3", "retries: 101") }, []string{
			`drorch.yaml:26: plans.files.source.primary.retries: must be between 0 and 100, got 101`}},
		{"retries negative", func(t *testing.T) string { return edit(t, "retries: 3", "retries: -1") }, []string{
			`drorch.yaml:26: plans.files.source.primary.retries: must be between 0 and 100, got -1`}},
		{"encryption without key", func(t *testing.T) string { return edit(t, "encryption: {key: env:DRORCH_FILES_KEY}", "encryption: {}") }, []string{
			`drorch.yaml:28: plans.files.encryption.key: required: a reference "env:NAME" or "file:PATH" to a 32-byte key`}},
		{"encryption empty", func(t *testing.T) string { return edit(t, "encryption: {key: env:DRORCH_FILES_KEY}", "encryption:") }, []string{
			`drorch.yaml:28: plans.files.encryption.key: required: a reference "env:NAME" or "file:PATH" to a 32-byte key`}},
		{"encryption key short", func(t *testing.T) string {
			t.Setenv("DRORCH_FILES_KEY", filesKey[:62])
			return valid
		}, []string{
			`drorch.yaml:28: plans.files.encryption.key: the key from env:DRORCH_FILES_KEY must be 32 bytes written as 64 hex digits or in base64 (make one with: openssl rand -hex 32)`}},
		{"encryption key is the value", func(t *testing.T) string {
			return edit(t, "encryption: {key: env:DRORCH_FILES_KEY}", "encryption: "+filesKey)
		}, []string{
			`drorch.yaml:28: plans.files.encryption: must be a mapping of keys to values, got a single value`}},

		// unknown keys, duplicates, types, syntax
		{"site without store", func(t *testing.T) string {
			return edit(t, "    store:\n      driver: s3\n      endpoint: 127.0.0.1:9002\n      bucket: drorch\n      accessKey: env:DRORCH_SECONDARY_ACCESS_KEY\n      secretKey: env:DRORCH_SECONDARY_SECRET_KEY\n      insecure: true\n", "")
		}, []string{
			`drorch.yaml:13: sites.secondary.store: required`}},
		{"unknown top key", func(t *testing.T) string { return edit(t, "temporal:", "temporl:") }, []string{
			`drorch.yaml:1: temporl: unknown key; allowed: temporal, sites, plans`}},
		{"unknown temporal key", func(t *testing.T) string { return edit(t, "  namespace: default", "  namespce: default") }, []string{
			`drorch.yaml:3: temporal.namespce: unknown key; allowed: address, namespace, tls, apiKey`}},
		{"unknown site key", func(t *testing.T) string { return edit(t, "  primary:\n    store:", "  primary:\n    stor:") }, []string{
			`drorch.yaml:5: sites.primary.store: required`,
			`drorch.yaml:6: sites.primary.stor: unknown key; allowed: store`}},
		{"unknown store key", func(t *testing.T) string { return edit(t, "bucket: drorch", "bucekt: drorch") }, []string{
			`drorch.yaml:6: sites.primary.store.bucket: required`,
			`drorch.yaml:9: sites.primary.store.bucekt: unknown key; allowed: driver, endpoint, bucket, prefix, region, accessKey, secretKey, insecure, caFile, parallel`}},
		{"unknown plan key", func(t *testing.T) string { return edit(t, "    source:", "    sourc:") }, []string{
			`drorch.yaml:22: plans.files.source: required at the primary site: add source.primary`,
			`drorch.yaml:25: plans.files.sourc: unknown key; allowed: primary, secondary, secondaries, source, encryption, access, dns, steps, failover, failback, drill, retryBudget, parallel, schedule, retention, standby, objectives, wal`}},
		{"unknown source key", func(t *testing.T) string {
			return edit(t, "path: /srv/data-standby", "path: /srv/data-standby, pth: /x")
		}, []string{
			`drorch.yaml:27: plans.files.source.secondary.pth: unknown key; allowed: driver, path, onChange, retries, hooks, backup, restore, snapshot, mode, host, port, user, password, database, sslmode, bin, afterRestore, options, startTimeout`}},
		{"parallel out of range", func(t *testing.T) string {
			return edit(t, "    secondary: secondary\n", "    secondary: secondary\n    parallel: 65\n")
		}, []string{
			`drorch.yaml:25: plans.files.parallel: must be 1 to 64, got 65`}},
		{"unknown tls key", func(t *testing.T) string {
			return edit(t, "  namespace: default\n", "  namespace: default\n  tls: {certificate: /c.pem}\n")
		}, []string{
			`drorch.yaml:4: temporal.tls.certificate: unknown key; allowed: cert, key, ca, serverName`}},
		{"duplicate key", func(t *testing.T) string {
			return edit(t, "      bucket: drorch\n", "      bucket: drorch\n      bucket: other\n")
		}, []string{
			`drorch.yaml:10: sites.primary.store.bucket: duplicate key (first at line 9)`}},
		{"duplicate site", func(t *testing.T) string { return edit(t, "  secondary:\n    store:", "  primary:\n    store:") }, []string{
			`drorch.yaml:13: sites.primary: duplicate key (first at line 5)`,
			`drorch.yaml:24: plans.files.secondary: unknown site "secondary"; sites: primary`}},
		{"non-string key", func(t *testing.T) string { return edit(t, "  namespace: default", "  1: default") }, []string{
			`drorch.yaml:3: temporal: keys must be strings, got a single value`}},
		{"parallel not a number", func(t *testing.T) string {
			return edit(t, "bucket: drorch\n", "bucket: drorch\n      parallel: many\n")
		}, []string{
			`drorch.yaml:10: sites.primary.store.parallel: must be an integer, got "many"`}},
		{"parallel float", func(t *testing.T) string { return edit(t, "bucket: drorch\n", "bucket: drorch\n      parallel: 8.5\n") }, []string{
			`drorch.yaml:10: sites.primary.store.parallel: must be an integer, got "8.5"`}},
		{"insecure yes", func(t *testing.T) string { return edit(t, "insecure: true", "insecure: yes") }, []string{
			`drorch.yaml:12: sites.primary.store.insecure: must be true or false, got "yes"`}},
		{"retries list", func(t *testing.T) string { return edit(t, "retries: 3", "retries: [3]") }, []string{
			`drorch.yaml:26: plans.files.source.primary.retries: must be an integer, got a list`}},
		{"path mapping", func(t *testing.T) string { return edit(t, "path: /srv/data-standby", "path: {a: b}") }, []string{
			`drorch.yaml:27: plans.files.source.secondary.path: must be a string, got a mapping`}},
		{"store scalar", func(t *testing.T) string {
			return edit(t, "    store:\n      driver: s3\n      endpoint: 127.0.0.1:9002\n      bucket: drorch\n      accessKey: env:DRORCH_SECONDARY_ACCESS_KEY\n      secretKey: env:DRORCH_SECONDARY_SECRET_KEY\n      insecure: true\n", "    store: s3\n")
		}, []string{
			`drorch.yaml:14: sites.secondary.store: must be a mapping of keys to values, got a single value`}},
		{"sites list", func(*testing.T) string { return "sites: [a, b]\nplans: {}\n" }, []string{
			`drorch.yaml:1: sites: must be a mapping of names to sections, got a list`,
			`drorch.yaml:2: plans: at least one plan is required`}},
		{"top level list", func(*testing.T) string { return "- sites\n- plans\n" }, []string{
			`drorch.yaml:1: must be a mapping of keys to values, got a list`}},
		{"syntax bad indent", func(t *testing.T) string {
			return edit(t, "      bucket: drorch\n      accessKey: env:DRORCH_SECONDARY", "     bucket: drorch\n      accessKey: env:DRORCH_SECONDARY")
		}, []string{
			`drorch.yaml:17: YAML syntax: did not find expected key`}},
		{"syntax line one", func(*testing.T) string { return "sites: a: b\n" }, []string{
			`drorch.yaml:1: YAML syntax: mapping values are not allowed in this context`}},
		{"syntax tab", func(t *testing.T) string { return edit(t, "      insecure: true\nplans:", "\tinsecure: true\nplans:") }, []string{
			`drorch.yaml:20: YAML syntax: found a tab character that violates indentation`}},
		{"syntax unclosed flow", func(t *testing.T) string { return edit(t, "path: /srv/data-standby}", "path: /srv/data-standby") }, []string{
			`drorch.yaml:27: YAML syntax: did not find expected ',' or '}'`}},
		{"syntax unknown anchor", func(t *testing.T) string { return edit(t, "bucket: drorch", "bucket: *bkt") }, []string{
			`drorch.yaml:9: YAML syntax: unknown anchor 'bkt' referenced`}},
		{"two documents", func(*testing.T) string { return valid + "---\nsites: {}\n" }, []string{
			`drorch.yaml:29: holds more than one YAML document; put the whole config in one`}},

		// secrets
		{"inline secret", func(t *testing.T) string {
			return edit(t, "secretKey: env:DRORCH_PRIMARY_SECRET_KEY", "secretKey: "+inlineSecret)
		}, []string{
			`drorch.yaml:11: sites.primary.store.secretKey: must be a reference "env:NAME" or "file:PATH", not an inline value`}},
		{"inline secret with colon", func(t *testing.T) string {
			return edit(t, "accessKey: env:DRORCH_PRIMARY_ACCESS_KEY", `accessKey: "`+primaryAccess+":"+inlineSecret+`"`)
		}, []string{
			`drorch.yaml:10: sites.primary.store.accessKey: must be a reference "env:NAME" or "file:PATH", not an inline value`}},
		{"inline secret after env:", func(t *testing.T) string {
			return edit(t, "accessKey: env:DRORCH_PRIMARY_ACCESS_KEY", `accessKey: "env:`+inlineSecret+`"`)
		}, []string{
			`drorch.yaml:10: sites.primary.store.accessKey: must be a reference "env:NAME" or "file:PATH", not an inline value`}},
		{"inline encryption key", func(t *testing.T) string { return edit(t, "{key: env:DRORCH_FILES_KEY}", "{key: "+filesKey+"}") }, []string{
			`drorch.yaml:28: plans.files.encryption.key: must be a reference "env:NAME" or "file:PATH", not an inline value`}},
		{"secret as list", func(t *testing.T) string { return edit(t, "{key: env:DRORCH_FILES_KEY}", "{key: ["+filesKey+"]}") }, []string{
			`drorch.yaml:28: plans.files.encryption.key: must be a reference "env:NAME" or "file:PATH", not an inline value`}},
		{"env unset", func(t *testing.T) string {
			os.Unsetenv("DRORCH_PRIMARY_ACCESS_KEY") // setSecrets registered its restore
			return valid
		}, []string{
			`drorch.yaml:10: sites.primary.store.accessKey: environment variable DRORCH_PRIMARY_ACCESS_KEY is not set`}},
		{"secret file missing", func(t *testing.T) string {
			return edit(t, "secretKey: env:DRORCH_PRIMARY_SECRET_KEY", "secretKey: file:/nonexistent/drorch-secret")
		}, []string{
			`drorch.yaml:11: sites.primary.store.secretKey: read secret file: open /nonexistent/drorch-secret: no such file or directory`}},

		// all together, in the order of the file
		{"many problems", func(t *testing.T) string {
			return edit(t,
				"path: /srv/data,", "path: srv/data,",
				"address: 127.0.0.1:7233", "adress: 127.0.0.1:7233",
				"secretKey: env:DRORCH_SECONDARY_SECRET_KEY", "secretKey: "+inlineSecret,
				"bucket: drorch", "bucket: Drorch",
			)
		}, []string{
			`drorch.yaml:2: temporal.adress: unknown key; allowed: address, namespace, tls, apiKey`,
			`drorch.yaml:9: sites.primary.store.bucket: must be 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit, got "Drorch"`,
			`drorch.yaml:19: sites.secondary.store.secretKey: must be a reference "env:NAME" or "file:PATH", not an inline value`,
			`drorch.yaml:26: plans.files.source.primary.path: must be an absolute path, got "srv/data"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			setSecrets(t)
			assertLines(t, problems(t, c.doc(t)), c.want)
		})
	}
}

func TestSecretFromFile(t *testing.T) {
	setSecrets(t)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(secondarySecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := edit(t, "secretKey: env:DRORCH_SECONDARY_SECRET_KEY", "secretKey: file:"+path)
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Sites["secondary"].Store.SecretKey; got.Value() != secondarySecret || got.Ref() != "file:"+path {
		t.Errorf("secret from file: ref %q, value matches: %v", got.Ref(), got.Value() == secondarySecret)
	}
}

func TestEncryptionKeyForms(t *testing.T) {
	for name, v := range map[string]string{
		"hex":        filesKey,
		"base64":     "ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJmqu8zd7v8=",
		"base64 raw": "ABEiM0RVZneImaq7zN3u_wARIjNEVWZ3iJmqu8zd7v8",
	} {
		t.Run(name, func(t *testing.T) {
			setSecrets(t)
			t.Setenv("DRORCH_FILES_KEY", v)
			cfg, err := Parse("drorch.yaml", []byte(valid))
			if err != nil {
				t.Fatal(err)
			}
			key, err := cfg.Plans["files"].Encryption.KeyBytes()
			if err != nil || fmt.Sprintf("%x", key) != filesKey {
				t.Errorf("KeyBytes() = %x, %v", key, err)
			}
		})
	}
}

func TestWithoutSecrets(t *testing.T) {
	// No secret in the environment: only the references are checked.
	for _, name := range []string{"DRORCH_PRIMARY_ACCESS_KEY", "DRORCH_PRIMARY_SECRET_KEY", "DRORCH_SECONDARY_ACCESS_KEY", "DRORCH_SECONDARY_SECRET_KEY", "DRORCH_FILES_KEY"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
	doc := edit(t, "secretKey: env:DRORCH_PRIMARY_SECRET_KEY", "secretKey: file:/nonexistent/secret")
	cfg, err := Parse("drorch.yaml", []byte(doc), WithoutSecrets())
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Sites["primary"].Store
	if st.AccessKey.Ref() != "env:DRORCH_PRIMARY_ACCESS_KEY" || !st.AccessKey.IsZero() || st.SecretKey.Ref() != "file:/nonexistent/secret" {
		t.Errorf("store secrets = %v %v", st.AccessKey, st.SecretKey)
	}
	if k := cfg.Plans["files"].Encryption.Key; k.Ref() != "env:DRORCH_FILES_KEY" || !k.IsZero() {
		t.Errorf("encryption key = %v", k)
	}

	got := problems(t, edit(t, "secretKey: env:DRORCH_PRIMARY_SECRET_KEY", "secretKey: "+inlineSecret), WithoutSecrets())
	assertLines(t, got, []string{`drorch.yaml:11: sites.primary.store.secretKey: must be a reference "env:NAME" or "file:PATH", not an inline value`})

	// Without secrets resolved, a missing encryption key is still reported.
	got = problems(t, edit(t, "{key: env:DRORCH_FILES_KEY}", "{}"), WithoutSecrets())
	assertLines(t, got, []string{`drorch.yaml:28: plans.files.encryption.key: required: a reference "env:NAME" or "file:PATH" to a 32-byte key`})
}

func TestPrintedConfigHidesSecrets(t *testing.T) {
	setSecrets(t)
	doc := edit(t, "  namespace: default\n", "  namespace: default\n  apiKey: env:TEMPORAL_API_KEY\n")
	cfg, err := Parse("drorch.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Temporal.APIKey.Value() != apiKey {
		t.Fatal("apiKey not resolved")
	}
	site, plan := cfg.Sites["primary"], cfg.Plans["files"]
	for _, v := range []any{cfg, *cfg, site, *site, site.Store, cfg.Sites["secondary"].Store, plan, *plan, *plan.Encryption, cfg.Temporal} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			assertNoSecret(t, "printed config ("+verb+")", fmt.Sprintf(verb, v))
		}
	}
}

func TestLoad(t *testing.T) {
	setSecrets(t)
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv(EnvConfig, "")

	// Nothing to find.
	_, err := Load("")
	if !errors.Is(err, ErrNoConfig) {
		t.Fatalf("Load(\"\") with no file = %v, want ErrNoConfig", err)
	}

	// ./drorch.yaml
	if err := os.WriteFile(filepath.Join(dir, "drorch.yaml"), []byte(valid), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != "drorch.yaml" {
		t.Errorf("File = %q, want drorch.yaml", cfg.File)
	}

	// $DRORCH_CONFIG wins over ./drorch.yaml, and its name is in errors.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(edit(t, "retries: 3", "retries: 300")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvConfig, bad)
	_, err = Load("")
	if err == nil || !strings.HasPrefix(err.Error(), bad+":26: plans.files.source.primary.retries:") {
		t.Errorf("Load with %s = %v", EnvConfig, err)
	}

	// A path given wins over both; one that is missing is an error, not ErrNoConfig.
	cfg, err = Load(filepath.Join(dir, "drorch.yaml"))
	if err != nil || cfg.File != filepath.Join(dir, "drorch.yaml") {
		t.Errorf("Load(path) = %v, %v", cfg, err)
	}
	_, err = Load(filepath.Join(dir, "missing.yaml"))
	if err == nil || errors.Is(err, ErrNoConfig) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want a not-exist error that is not ErrNoConfig", err)
	}
	t.Setenv(EnvConfig, filepath.Join(dir, "missing.yaml"))
	_, err = Load("")
	if err == nil || errors.Is(err, ErrNoConfig) {
		t.Errorf("Load with %s naming a missing file = %v, want an error that is not ErrNoConfig", EnvConfig, err)
	}
}

func TestEveryTypeWithASecretHasFormat(t *testing.T) {
	formatter := reflect.TypeFor[fmt.Formatter]()
	seen := map[reflect.Type]bool{}
	var holdsSecret func(reflect.Type) bool
	holdsSecret = func(typ reflect.Type) bool {
		switch typ.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			return holdsSecret(typ.Elem())
		case reflect.Struct:
			if typ == secretType {
				return true
			}
			if done, ok := seen[typ]; ok {
				return done
			}
			seen[typ] = false
			has := false
			for i := range typ.NumField() {
				if holdsSecret(typ.Field(i).Type) {
					has = true
				}
			}
			seen[typ] = has
			if has && !typ.Implements(formatter) {
				t.Errorf("%s holds a secret.Secret but has no Format method: %%s of it could print the secret", typ)
			}
			return has
		}
		return false
	}
	holdsSecret(reflect.TypeFor[Config]())
}
