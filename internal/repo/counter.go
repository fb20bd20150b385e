package repo

import (
	"context"
	"sync/atomic"

	"github.com/drorch/drorch/drivers/store"
)

type counterKey struct{}

// WithCounter returns ctx carrying n, to which the repository's long
// metadata work adds one for each object a listing returns and each entry a
// point's reader decodes or its writer takes. A step that moves no bytes for
// minutes (listing ten million chunks, reading the entries of a hundred
// million files) watches n to tell slow from hung: the activities heartbeat
// on it.
func WithCounter(ctx context.Context, n *atomic.Int64) context.Context {
	return context.WithValue(ctx, counterKey{}, n)
}

// counterOf returns ctx's counter, or one nobody reads.
func counterOf(ctx context.Context) *atomic.Int64 {
	if n, ok := ctx.Value(counterKey{}).(*atomic.Int64); ok && n != nil {
		return n
	}
	return new(atomic.Int64)
}

// list is the store's List, counting each object on ctx's counter.
func (r *Repo) list(ctx context.Context, prefix string, fn func(store.Object) error) error {
	n := counterOf(ctx)
	return r.st.List(ctx, prefix, func(o store.Object) error {
		n.Add(1)
		return fn(o)
	})
}
