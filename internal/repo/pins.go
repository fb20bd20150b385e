package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// A pin keeps a restore point from retention: pins/<point>.json.zst, a
// small JSON object sealed like a staging object (additional data
// "pin:<point>"), so that only a holder of the key can pin or appear to.
const pinsDir = "pins/"

// Pin records who pinned a point and when.
type Pin struct {
	Point string    `json:"point"`
	By    string    `json:"by,omitempty"` // the operation that pinned it
	At    time.Time `json:"at"`
	Note  string    `json:"note,omitempty"`
}

func pinKey(point string) string { return pinsDir + point + ".json.zst" }

// PinPoint pins a valid restore point. Pinning it again replaces the pin.
func (r *Repo) PinPoint(ctx context.Context, p Pin) error {
	switch ok, err := r.HasManifest(ctx, p.Point); {
	case err != nil:
		return err
	case !ok:
		return drivers.Permanent(drivers.ReasonNotFound, fmt.Errorf("pin restore point %s at %s: no such valid restore point: %w", p.Point, r.Location(), drivers.ErrNotFound))
	}
	plain, err := json.Marshal(p)
	if err != nil {
		return err
	}
	body, err := r.seal(plain, []byte("pin:"+p.Point))
	if err != nil {
		return err
	}
	if err := r.put(ctx, pinKey(p.Point), body); err != nil {
		return fmt.Errorf("pin restore point %s: write %s: %w", p.Point, r.where(pinKey(p.Point)), err)
	}
	return nil
}

// UnpinPoint removes the pin of point; removing an absent one is not an error.
func (r *Repo) UnpinPoint(ctx context.Context, point string) error {
	if err := ValidPointID(point); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	if err := r.st.Delete(ctx, r.key(pinKey(point))); err != nil {
		return fmt.Errorf("unpin restore point %s: delete %s: %w", point, r.where(pinKey(point)), err)
	}
	return nil
}

// Pins returns the pins, by point. A pin that does not open with r's key is
// an error: retention must not run on a guess of what is pinned.
func (r *Repo) Pins(ctx context.Context) (map[string]Pin, error) {
	prefix := r.key(pinsDir)
	var points []string
	if err := r.list(ctx, prefix, func(o store.Object) error {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, prefix), ".json.zst"); ok && ValidPointID(id) == nil {
			points = append(points, id)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list pins at %s: %w", r.where(pinsDir), err)
	}
	out := make(map[string]Pin, len(points))
	for _, pt := range points {
		body, err := r.get(ctx, pinKey(pt), 1<<20)
		if drivers.IsNotFound(err) {
			continue // unpinned since the listing
		}
		var p Pin
		if err == nil {
			var plain []byte
			if plain, err = r.open(body, []byte("pin:"+pt), &metaDec); err == nil {
				if jerr := json.Unmarshal(plain, &p); jerr != nil || p.Point != pt {
					err = errCorrupt{"not a pin of this point (corrupted)"}
				}
			}
		}
		if err != nil {
			return nil, classify(fmt.Errorf("pin %s: %w (unpin it with drorch points unpin, then pin it again)", r.where(pinKey(pt)), err))
		}
		out[pt] = p
	}
	return out, nil
}
