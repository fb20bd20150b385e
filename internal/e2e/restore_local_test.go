package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A restore over an earlier one fetches only what changed: chunks the
// target already holds at the same place are taken from it once their
// SHA-256 matches, and anything else in the target — here bytes tampered
// with behind drorch's back, size and mtime kept — is fetched and
// replaced.
func TestRestoreOverAnEarlierOneMovesOnlyWhatChanged(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	src, dst := s.source("primary"), s.source("secondary")
	genTree(t, src, treeSpec{seed: 41, dataBytes: 48 << 20, files: 40})
	s.backup()
	s.transmit()
	first := s.restore("secondary", "")
	if first.ChunksLocal != 0 {
		t.Fatalf("the first restore into an empty target reused %d chunks", first.ChunksLocal)
	}
	requireSameTree(t, src, dst)

	changed := changeBytes(t, src, 2<<20)
	s.backup()
	s.transmit()
	second := s.restore("secondary", "")
	requireSameTree(t, src, dst)
	t.Logf("after changing %d bytes: %d of %d chunks taken from the target (%d bytes)", changed, second.ChunksLocal, second.Chunks, second.BytesLocal)
	if second.ChunksLocal == 0 || second.Chunks-second.ChunksLocal > second.Chunks/4 {
		t.Fatalf("the second restore reused %d of %d chunks; want most of them", second.ChunksLocal, second.Chunks)
	}

	// Tamper with a file of the target, keeping its size and times.
	var victim string
	var victimInfo os.FileInfo
	filepath.Walk(dst, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 1<<20 && victim == "" {
			victim, victimInfo = p, fi
		}
		return nil
	})
	if victim == "" {
		t.Fatal("no file to tamper with")
	}
	f, err := os.OpenFile(victim, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tampered"), victimInfo.Size()/2); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mt := victimInfo.ModTime()
	if err := os.Chtimes(victim, time.Now(), mt); err != nil {
		t.Fatal(err)
	}
	third := s.restore("secondary", "")
	requireSameTree(t, src, dst)
	if third.ChunksLocal >= third.Chunks {
		t.Fatalf("the tampered chunk was taken from the target: %d of %d local", third.ChunksLocal, third.Chunks)
	}
}
