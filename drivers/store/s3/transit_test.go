package s3

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/testenv"
)

// damagingProxy forwards TCP connections to target and turns every 0xFF
// byte a client sends into 0xFE: HTTP headers are ASCII, so only bodies
// are damaged, as a faulty NIC or middlebox might.
func damagingProxy(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(c, s); c.Close() }()
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					for i := range buf[:n] {
						if buf[i] == 0xFF {
							buf[i] = 0xFE
						}
					}
					if _, werr := s.Write(buf[:n]); werr != nil || err != nil {
						s.Close()
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestPutDamagedInTransit: over plain HTTP, a body damaged between drorch and
// the server is refused, whether it is sent with its CRC32C (a body whose
// bytes are at hand, as the repository's chunks) or signed over its payload
// (a stream), and the object is not written. Either refusal is transient:
// sending again may succeed. (The signed stream's is SignatureDoesNotMatch,
// which means a wrong secret key only while the store has accepted none of
// its requests.)
func TestPutDamagedInTransit(t *testing.T) {
	m := testenv.StartMinIO(t)
	direct := mustNew(t, config(m, "drorch", "transit"))
	if err := direct.Prepare(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cfg := config(m, "drorch", "transit")
	cfg.Endpoint = damagingProxy(t, m.Endpoint)
	viaProxy := mustNew(t, cfg)

	clean := bytes.Repeat([]byte("drorch "), 150<<10)
	if err := viaProxy.Put(testCtx(t), "clean", bytes.NewBuffer(clean), int64(len(clean))); err != nil {
		t.Fatalf("an undamaged body through the proxy: %v", err)
	}
	damaged := bytes.Clone(clean)
	damaged[len(damaged)/2] = 0xFF
	for name, r := range map[string]io.Reader{
		"bytes (CRC32C)":  bytes.NewBuffer(damaged),
		"stream (signed)": io.MultiReader(bytes.NewReader(damaged)),
	} {
		err := viaProxy.Put(testCtx(t), "damaged", r, int64(len(damaged)))
		t.Logf("%s: %v", name, err)
		if err == nil {
			t.Errorf("%s: a body damaged on the way was accepted", name)
		}
		if reason, ok := drivers.IsPermanent(err); ok {
			t.Errorf("%s: permanent %s, want transient", name, reason)
		}
		if _, err := direct.Stat(testCtx(t), "damaged"); !drivers.IsNotFound(err) {
			t.Errorf("%s: the damaged object was stored (stat: %v)", name, err)
		}
	}
}
