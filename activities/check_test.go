package activities

import (
	"math"
	"testing"

	"github.com/drorch/drorch/internal/repo"
)

// The share a check reads is about the share asked for, the same for one
// seed (a resumed attempt reads on where it stopped) and another for
// another seed (successive checks cover other chunks).
func TestChosenShare(t *testing.T) {
	const n = 20000
	ids := make([]repo.ID, n)
	for i := range ids {
		ids[i] = repo.Hash([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
	}
	count := func(in CheckRepositoryInput) (int, map[repo.ID]bool) {
		got := map[repo.ID]bool{}
		for _, id := range ids {
			if chosen(in, id) {
				got[id] = true
			}
		}
		return len(got), got
	}
	if c, _ := count(CheckRepositoryInput{ReadPercent: 0}); c != 0 {
		t.Fatalf("0%%: %d chosen", c)
	}
	if c, _ := count(CheckRepositoryInput{ReadPercent: 100}); c != n {
		t.Fatalf("100%%: %d of %d chosen", c, n)
	}
	c1, a := count(CheckRepositoryInput{ReadPercent: 10, Seed: "run-1"})
	c2, b := count(CheckRepositoryInput{ReadPercent: 10, Seed: "run-1"})
	_, other := count(CheckRepositoryInput{ReadPercent: 10, Seed: "run-2"})
	if math.Abs(float64(c1)-n/10) > n/100 {
		t.Fatalf("10%%: %d of %d chosen", c1, n)
	}
	if c1 != c2 {
		t.Fatal("the same seed chose differently")
	}
	same := 0
	for id := range a {
		if !b[id] {
			t.Fatal("the same seed chose differently")
		}
		if other[id] {
			same++
		}
	}
	if same > c1/4 {
		t.Fatalf("another seed chose %d of the same %d chunks", same, c1)
	}
}
