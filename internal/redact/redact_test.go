package redact

import (
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	secrets := []string{"s3cr3t-Pa55", "AKIAEXAMPLEKEY"}
	for _, tc := range []struct{ in, want string }{
		{"GET https://api.example.com/v1/ready?token=abc123&x=1 failed",
			"GET https://api.example.com/v1/ready?[redacted] failed"},
		{"fetch https://admin:hunter22@db.example.com:8443/path#access_token=zz",
			"fetch https://db.example.com:8443/path#[redacted]"},
		{"presigned http://minio:9000/b/k?X-Amz-Signature=deadbeef done",
			"presigned http://minio:9000/b/k?[redacted] done"},
		{"psql: password=hunter22 user=app", "psql: password=[redacted] user=app"},
		{`{"api_key": "k-123", "ok": true}`, `{"api_key": "[redacted]", "ok": true}`},
		{"Authorization: Bearer eyJhbGciOi.x.y", "Authorization: [redacted]"},
		{"the key s3cr3t-Pa55 and AKIAEXAMPLEKEY leaked", "the key [redacted] and [redacted] leaked"},
		{"plain text, nothing to hide", "plain text, nothing to hide"},
	} {
		if got := Text(tc.in, secrets); got != tc.want {
			t.Errorf("Text(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestTailCapsAndNeverShowsHalfASecret(t *testing.T) {
	secret := "0123456789abcdefSECRET"
	out := strings.Repeat("x", 3*TailSize) + " url http://h/p?q=1 end"
	got, cut := Tail([]byte(out), false, nil)
	if !cut || len(got) > TailSize || !strings.HasSuffix(got, "http://h/p?[redacted] end") {
		t.Fatalf("Tail: cut %v, %d bytes, ends %q", cut, len(got), got[max(0, len(got)-40):])
	}
	// A cut through a secret leaves its end at the start: masked too.
	in := secret[5:] + " rest of the output"
	got, _ = Tail([]byte(in), true, []string{secret})
	if strings.Contains(got, secret[5:]) || !strings.HasPrefix(got, Mask) {
		t.Fatalf("Tail of output cut inside a secret: %q", got)
	}
	// Two characters give nothing away and are left alone.
	got, _ = Tail([]byte("ET and more"), true, []string{secret})
	if got != "ET and more" {
		t.Fatalf("Tail %q", got)
	}
}
