package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The worker's /metrics, scraped over HTTP: the recovery point age grows
// while nothing happens and drops after a backup and transmit cycle; the
// objective and Temporal's own metrics are there too.
func TestMetricsEndpoint(t *testing.T) {
	s := newStack(t, stackOptions{planExtra: func(*stack) string { return "    objectives: {rpo: 1h}\n" }})
	wp := s.spawnWorker("--metrics-listen", "127.0.0.1:0")
	var url string
	waitFor(t, "the worker to serve metrics", 60*time.Second, func() bool {
		m := regexp.MustCompile(`"address":"([0-9.:]+)"[^\n]*"serving Prometheus metrics`).FindSubmatch(wp.log.Bytes())
		if m != nil {
			url = "http://" + string(m[1]) + "/metrics"
		}
		return m != nil
	})
	scrape := func() string {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("scrape %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape %s: %s\n%s", url, resp.Status, b)
		}
		return string(b)
	}
	age := func(out, site string) float64 {
		m := regexp.MustCompile(`(?m)^drorch_recovery_point_age_seconds\{plan="files",site="` + site + `"\} (\S+)$`).FindStringSubmatch(out)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}

	genTree(t, s.source("primary"), treeSpec{seed: 51, dataBytes: 256 << 10, files: 5})
	s.backup()
	s.transmit()
	out := scrape()
	first := age(out, "secondary")
	if first < 0 || age(out, "primary") < 0 {
		t.Fatalf("no recovery point age right after a committed backup and transmit:\n%s", out)
	}
	for _, want := range []string{`drorch_rpo_objective_seconds{plan="files"} 3600`, `drorch_backup_bytes_total{plan="files",site="primary"}`,
		`drorch_transmit_bytes_total{plan="files",site="secondary"}`, `drorch_operation_duration_seconds_count{operation="backup"} 1`, "temporal_"} {
		if !strings.Contains(out, want) {
			t.Fatalf("metrics lack %s:\n%s", want, out)
		}
	}
	time.Sleep(2 * time.Second)
	grown := age(scrape(), "secondary")
	if grown < first+1.5 {
		t.Fatalf("the age did not grow: %.1f s, then %.1f s two seconds later", first, grown)
	}
	s.backup()
	s.transmit()
	if dropped := age(scrape(), "secondary"); dropped < 0 || dropped >= grown {
		t.Fatalf("the age did not drop after a cycle: %.1f s before, %.1f s after", grown, dropped)
	}
}
