package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// The age is computed at scrape time and drops when a newer point commits;
// the hooks do nothing before Install.
func TestAgeAndHooks(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	m := New()
	m.now = func() time.Time { return now }
	PointCommitted("files", "a", now) // not installed: ignored
	if out := scrape(t, m); strings.Contains(out, "drorch_recovery_point_age_seconds{") {
		t.Fatalf("a hook reported before Install:\n%s", out)
	}
	Install(m)
	t.Cleanup(func() { Install(nil) })
	m.SetNewestPoint("files", "b", now.Add(-time.Hour))
	m.SetObjective("files", 15*time.Minute)
	m.SetSchedule("files", true, true, now.Add(-2*time.Hour))
	GCSucceeded("files", "b", now.Add(-time.Minute))
	BackupBytes("files", "a", 100)
	OperationDone("backup", 3*time.Second)
	out := scrape(t, m)
	for _, want := range []string{
		`drorch_recovery_point_age_seconds{plan="files",site="b"} 3600`,
		`drorch_rpo_objective_seconds{plan="files"} 900`,
		`drorch_schedule_paused{plan="files"} 1`,
		fmt.Sprintf(`drorch_schedule_paused_since_timestamp_seconds{plan="files"} %g`, float64(now.Add(-2*time.Hour).Unix())),
		`drorch_gc_last_success_timestamp_seconds{plan="files",site="b"} 1.76732274e+09`,
		`drorch_backup_bytes_total{plan="files",site="a"} 100`,
		`drorch_operation_duration_seconds_count{operation="backup"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	now = now.Add(time.Minute)
	PointCommitted("files", "b", now.Add(-10*time.Second))
	PointCommitted("files", "b", now.Add(-time.Hour)) // older: ignored
	if out := scrape(t, m); !strings.Contains(out, `drorch_recovery_point_age_seconds{plan="files",site="b"} 10`) {
		t.Errorf("age after a commit:\n%s", out)
	}
	var nilM *Metrics
	nilM.PointCommitted("x", "y", now) // nil-safe
}
