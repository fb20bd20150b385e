package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/drorch/drorch/drivers"
)

const epochKey = "epoch.json"

// Epoch is the plan's fencing epoch at a site, kept in epoch.json as plain,
// indented JSON so that an operator can read it: it is not secret.
type Epoch struct {
	Epoch  uint64 `json:"epoch"`
	Site   string `json:"site"`             // the site that wrote it
	Active string `json:"active,omitempty"` // the plan's active site as of this epoch; empty: its primary
	// Primary and Secondary are the plan's roles as of this epoch once a
	// permanent failover has reversed them; empty: the configured roles.
	Primary   string    `json:"primary,omitempty"`
	Secondary string    `json:"secondary,omitempty"`
	Op        string    `json:"op,omitempty"` // the operation that set it, so a retried step does not bump twice
	Reason    string    `json:"reason,omitempty"`
	Updated   time.Time `json:"updated"`
}

// GetEpoch reads epoch.json. An absent one is epoch 0 with no error; one that
// cannot be decoded is permanent with reason Corrupt.
func (r *Repo) GetEpoch(ctx context.Context) (Epoch, error) {
	b, err := r.get(ctx, epochKey, 64<<10)
	if errors.Is(err, drivers.ErrNotFound) {
		return Epoch{}, nil
	}
	if err != nil {
		return Epoch{}, classify(fmt.Errorf("get epoch at %s: %w", r.where(epochKey), err))
	}
	var e Epoch
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err = d.Decode(&e); err == nil {
		if _, tok := d.Token(); tok != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		return Epoch{}, drivers.Permanentf(drivers.ReasonCorrupt, "epoch at %s: %v (corrupted)", r.where(epochKey), err)
	}
	return e, nil
}

// PutEpoch writes epoch.json, replacing what is there. It does not compare
// with the stored epoch: fencing decisions belong to the caller.
func (r *Repo) PutEpoch(ctx context.Context, e Epoch) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("put epoch: %w", err)
	}
	if err := r.put(ctx, epochKey, append(b, '\n')); err != nil {
		return fmt.Errorf("put epoch at %s: %w", r.where(epochKey), err)
	}
	return nil
}
