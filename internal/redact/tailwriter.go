package redact

import "sync"

// TailWriter keeps about the last Max bytes written to it, for a command's
// output that is to end up in an error: stdout and stderr may be copied
// into it by two goroutines.
type TailWriter struct {
	Max int

	mu      sync.Mutex
	buf     []byte
	dropped bool
}

func (t *TailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.Max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.Max:]...)
		t.dropped = true
	}
	return len(p), nil
}

// Tail returns the last Max bytes written, cleaned as Tail cleans them,
// and whether anything before them was left out.
func (t *TailWriter) Tail(secrets []string) (string, bool) {
	t.mu.Lock()
	b, cut := t.buf, t.dropped
	if len(b) > t.Max {
		b, cut = b[len(b)-t.Max:], true
	}
	t.mu.Unlock()
	return Tail(b, cut, secrets)
}
