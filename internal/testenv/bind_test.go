package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestBIND(t *testing.T) {
	b := StartBIND(t)
	if got := b.Serial(t, b.Zone); got != 1 {
		t.Fatalf("serial of %s = %d, want 1", b.Zone, got)
	}
	if got := b.Serial(t, BINDOtherZone); got != 1 {
		t.Fatalf("serial of %s = %d, want 1", BINDOtherZone, got)
	}
	if got := b.Query(t, "ns."+b.Zone, "A"); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("ns.%s A = %q", b.Zone, got)
	}

	// An update signed with the key is applied; the same update for the
	// other zone is refused.
	if rcode := b.update(t, b.Zone, "app."+b.Zone+" 60 IN A 192.0.2.7"); rcode != dns.RcodeSuccess {
		t.Fatalf("update %s: %s", b.Zone, dns.RcodeToString[rcode])
	}
	if rcode := b.update(t, BINDOtherZone, "app."+BINDOtherZone+" 60 IN A 192.0.2.7"); rcode != dns.RcodeRefused {
		t.Fatalf("update %s: %s, want REFUSED", BINDOtherZone, dns.RcodeToString[rcode])
	}
	if got := b.Query(t, "app."+b.Zone, "A"); !slices.Equal(got, []string{"192.0.2.7"}) {
		t.Fatalf("after the update app.%s A = %q", b.Zone, got)
	}
	serial := b.Serial(t, b.Zone)

	b.Stop(t)
	b.Start(t)
	if got := b.Query(t, "app."+b.Zone, "A"); !slices.Equal(got, []string{"192.0.2.7"}) {
		t.Fatalf("after a restart app.%s A = %q: the update was lost", b.Zone, got)
	}
	if got := b.Serial(t, b.Zone); got != serial {
		t.Fatalf("after a restart the serial is %d, want %d", got, serial)
	}
	if got := b.Query(t, "nothing."+b.Zone, "A"); len(got) != 0 {
		t.Fatalf("nothing.%s A = %q, want none", b.Zone, got)
	}
}

// update adds rr to zone with an update signed with the server's key and
// returns the response code.
func (b *BIND) update(t *testing.T, zone, rr string) int {
	t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetUpdate(zone)
	m.Insert([]dns.RR{r})
	m.SetTsig(b.KeyName, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Net: "tcp", TsigSecret: map[string]string{b.KeyName: b.KeySecret}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, _, err := c.ExchangeContext(ctx, m, b.Addr)
	if err != nil {
		t.Fatalf("update %s: %v", zone, err)
	}
	return resp.Rcode
}

func TestOutsideAppArmor(t *testing.T) {
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Skip(err)
	}
	old := appArmorProfiles
	t.Cleanup(func() { appArmorProfiles = old })

	appArmorProfiles = filepath.Join(t.TempDir(), "none")
	if got := outsideAppArmor(t, bin); got != bin {
		t.Fatalf("without AppArmor: %s, want %s", got, bin)
	}
	appArmorProfiles = filepath.Join(t.TempDir(), "profiles")
	if err := os.WriteFile(appArmorProfiles, []byte("/usr/sbin/named (enforce)\nnamed (enforce)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := outsideAppArmor(t, bin)
	if got == bin {
		t.Fatal("with a named profile the binary is not copied")
	}
	if err := exec.Command(got).Run(); err != nil {
		t.Fatalf("the copy %s does not run: %v", got, err)
	}
	if again := outsideAppArmor(t, bin); again != got {
		t.Fatalf("a second call copied again to %s", again)
	}
}
