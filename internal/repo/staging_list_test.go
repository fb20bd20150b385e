package repo

import (
	"context"
	"slices"
	"testing"
)

func TestListStaging(t *testing.T) {
	r, err := New(newMemStore(), "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, n := range []string{"b", "a", "c"} {
		if err := r.PutStaging(ctx, "reports", n, n); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.PutStaging(ctx, "other", "x", 1); err != nil {
		t.Fatal(err)
	}
	got, err := r.ListStaging(ctx, "reports")
	if err != nil || !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("ListStaging = %v, %v", got, err)
	}
}
