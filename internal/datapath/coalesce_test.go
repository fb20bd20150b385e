package datapath

import (
	"reflect"
	"testing"

	"github.com/drorch/drorch/drivers/source"
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
// finish in; directories and symlinks the walk passed never hold it back.
func TestWatermarkIsTheFirstUnfinishedFile(t *testing.T) {
	// Entries: 0 dir, 1 file, 2 symlink, 3 file, 4 file.
	wm := watermark{open: map[int]struct{}{}}
	wm.walked = 1 // the dir
	wm.open[1] = struct{}{}
	wm.walked = 3 // file 1 open, the symlink
	wm.open[3] = struct{}{}
	wm.walked = 4
	if got := wm.low(); got != 1 {
		t.Fatalf("low = %d before any file finished, want 1", got)
	}
	delete(wm.open, 3)
	if got := wm.low(); got != 1 {
		t.Fatalf("low = %d after a later file finished, want 1", got)
	}
	delete(wm.open, 1)
	if got := wm.low(); got != 4 {
		t.Fatalf("low = %d after files 1 and 3 finished, the walk at 4, want 4", got)
	}
	wm.open[4] = struct{}{}
	wm.walked = 5
	if got := wm.low(); got != 4 {
		t.Fatalf("low = %d with file 4 open, want 4", got)
	}
	delete(wm.open, 4)
	if got := wm.low(); got != 5 {
		t.Fatalf("low = %d after every file finished, want 5", got)
	}
}
