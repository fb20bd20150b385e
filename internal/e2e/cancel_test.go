package e2e

import (
	"strings"
	"testing"
	"time"
)

// An operator cancels a failover that waits for approval (after fencing and
// the epoch change): it is undone — the primary alone writable, DNS still
// at the primary, the active role back — and the report says so. Then a
// data recovery waiting for complete is cancelled: the active site is left
// as it was.
func TestCancelASwitch(t *testing.T) {
	ss := newSwitchStack(t, "    steps:\n      - {name: hold, on: [failover], approval: {timeout: 1h}}\n"+failbackSettings)
	ss.startWorker()
	ss.pointDNS("primary")
	genTree(t, ss.source("primary"), treeSpec{seed: 51, dataBytes: 1 << 20, files: 5})
	ss.backup()
	ss.transmit()
	cli, status := ss.cli, ss.cliStatus

	if _, errOut, err := ss.drorch("cancel", "--plan", plan); err == nil || !strings.Contains(errOut, "no switching operation of plan files is running") {
		t.Fatalf("cancel with nothing running: %v\n%s", err, errOut)
	}
	cli("failover", "--plan", plan)
	waitFor(t, "the failover to wait for approval", 3*time.Minute, func() bool {
		p := status().InProgress
		return p != nil && strings.Contains(p.Waiting, "approval of step hold")
	})
	out := cli("cancel", "--plan", plan, "--wait")
	if !strings.Contains(out, "compensated") || !strings.Contains(out, "make primary read-write again") {
		t.Fatalf("cancel --wait does not show the failover undone:\n%s", out)
	}
	ss.requireOnlyPrimaryActive()
	if st := status(); st.Active != "primary" || st.InProgress != nil {
		t.Fatalf("after the cancelled failover: active %s, in progress %+v", st.Active, st.InProgress)
	}

	// A failover approved this time, then a data recovery cancelled while
	// it waits for complete.
	cli("failover", "--plan", plan, "--unplanned")
	waitFor(t, "the failover to wait for approval", 3*time.Minute, func() bool {
		p := status().InProgress
		return p != nil && strings.Contains(p.Waiting, "approval of step hold")
	})
	cli("approve", "--plan", plan)
	waitFor(t, "the approved failover to end", 3*time.Minute, func() bool {
		st := status()
		return st.InProgress == nil && st.Active == "secondary"
	})
	cli("failback", "--plan", plan)
	waitFor(t, "data recovery to catch up", 3*time.Minute, func() bool {
		p := status().InProgress
		return p != nil && strings.Contains(p.Waiting, "drorch complete")
	})
	if out := cli("cancel", "--plan", plan, "--wait"); !strings.Contains(out, "failback") || !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel --wait of the data recovery:\n%s", out)
	}
	if pw, sw := ss.writable("primary"), ss.writable("secondary"); pw || !sw {
		t.Fatalf("after the cancelled data recovery: primary writable=%v, secondary writable=%v; want only the secondary", pw, sw)
	}
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["secondary"] {
		t.Fatalf("BIND answers app = %v, want the secondary's %s", got, siteAddr["secondary"])
	}
	if st := status(); st.Active != "secondary" || st.InProgress != nil {
		t.Fatalf("after the cancelled data recovery: active %s, in progress %+v", st.Active, st.InProgress)
	}
}
