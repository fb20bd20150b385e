package activities

import (
	"testing"

	"github.com/drorch/drorch/drivers"
)

func TestBasebackupRefusal(t *testing.T) {
	cases := []struct{ stderr, want string }{
		{`pg_basebackup: error: connection to server at "127.0.0.1", port 5432 failed: FATAL:  password authentication failed for user "drorch"`, drivers.ReasonAuth},
		{`FATAL:  no pg_hba.conf entry for replication connection from host "10.0.0.5", user "drorch", no encryption`, drivers.ReasonAuth},
		{`pg_basebackup: error: can only write single tablespace to stdout, database has 2`, drivers.ReasonInvalidConfig},
		{`pg_basebackup: error: could not connect to server: Connection refused`, ""},
		{`FATAL:  number of requested standby connections exceeds max_wal_senders (currently 10)`, ""},
	}
	for _, tc := range cases {
		if got := basebackupRefusal(tc.stderr); got != tc.want {
			t.Errorf("basebackupRefusal(%q) = %q, want %q", tc.stderr, got, tc.want)
		}
	}
}

func TestRecoverySettingsQuote(t *testing.T) {
	if got := shellQuote("/usr/local/bin/drorch-worker"); got != "/usr/local/bin/drorch-worker" {
		t.Errorf("shellQuote of a plain path = %s", got)
	}
	if got := shellQuote("/etc/my drorch/it's.yaml"); got != `'/etc/my drorch/it'\''s.yaml'` {
		t.Errorf("shellQuote = %s", got)
	}
	if got := confString("a 'b'"); got != `'a ''b'''` {
		t.Errorf("confString = %s", got)
	}
}
