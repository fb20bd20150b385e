package datapath

import (
	"reflect"
	"testing"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// Holes shorter than a chunk are read as data: as chunk boundaries they
// would cost more than they save.
func TestCoalesceJoinsShortHoles(t *testing.T) {
	for _, c := range []struct {
		desc string
		in   []source.Region
		want []source.Region
	}{
		{"none", nil, nil},
		{"empty regions dropped", []source.Region{{Offset: 0, Length: 0}, {Offset: 10, Length: 5}}, []source.Region{{Offset: 10, Length: 5}}},
		{"short hole joined", []source.Region{{Offset: 0, Length: 10}, {Offset: 15, Length: 10}}, []source.Region{{Offset: 0, Length: 25}}},
		{"long hole kept", []source.Region{{Offset: 0, Length: 10}, {Offset: 110, Length: 10}}, []source.Region{{Offset: 0, Length: 10}, {Offset: 110, Length: 10}}},
	} {
		if got := coalesce(c.in, 100); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: coalesce = %v, want %v", c.desc, got, c.want)
		}
	}
}

// The resume point is the first file not finished, whatever order files
// finish in; directories and symlinks never hold it back.
func TestWatermarkIsTheFirstUnfinishedFile(t *testing.T) {
	entries := []repo.Entry{{Type: source.TypeDir}, {Type: source.TypeFile}, {Type: source.TypeSymlink}, {Type: source.TypeFile}, {Type: source.TypeFile}}
	wm := newWatermark(entries)
	if wm.low != 1 {
		t.Fatalf("low = %d before any file finished, want 1", wm.low)
	}
	wm.finish(3)
	if wm.low != 1 {
		t.Fatalf("low = %d after a later file finished, want 1", wm.low)
	}
	wm.finish(1)
	if wm.low != 4 {
		t.Fatalf("low = %d after files 1 and 3 finished, want 4", wm.low)
	}
	wm.finish(4)
	if wm.low != len(entries) {
		t.Fatalf("low = %d after every file finished, want %d", wm.low, len(entries))
	}
}
