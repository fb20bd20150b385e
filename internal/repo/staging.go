package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

const stagingDir = "staging/"

var stagingNameRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func checkStagingName(what, s string) error {
	if !stagingNameRE.MatchString(s) || s == "." || s == ".." {
		return drivers.Permanentf(drivers.ReasonInvalidInput,
			"staging %s %q must be 1 to 128 of [A-Za-z0-9._:-], and not \".\" or \"..\"", what, s)
	}
	return nil
}

func stagingKey(op, name string) string { return stagingDir + op + "/" + name + ".json.zst" }

// PutStaging stores v, as JSON, as the state name of the operation op in
// progress: staging/<op>/<name>.json.zst, compressed, and sealed with the
// additional data "staging:<op>/<name>" when r has a key. It replaces what
// was there.
func (r *Repo) PutStaging(ctx context.Context, op, name string, v any) error {
	if err := checkStagingName("operation", op); err != nil {
		return err
	}
	if err := checkStagingName("name", name); err != nil {
		return err
	}
	plain, err := json.Marshal(v)
	if err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put staging %s/%s: %w", op, name, err))
	}
	if len(plain) > MaxMetadataSize {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "put staging %s/%s: %d bytes is more than the %d the format allows", op, name, len(plain), MaxMetadataSize)
	}
	body, err := r.seal(plain, []byte("staging:"+op+"/"+name))
	if err != nil {
		return fmt.Errorf("put staging %s/%s: %w", op, name, err)
	}
	key := stagingKey(op, name)
	if err := r.put(ctx, key, body); err != nil {
		return fmt.Errorf("put staging %s/%s at %s: %w", op, name, r.where(key), err)
	}
	return nil
}

// GetStaging decodes the state name of operation op into v. An absent one
// wraps drivers.ErrNotFound; one that cannot be opened or decoded into v is
// permanent with reason Corrupt.
func (r *Repo) GetStaging(ctx context.Context, op, name string, v any) error {
	if err := checkStagingName("operation", op); err != nil {
		return err
	}
	if err := checkStagingName("name", name); err != nil {
		return err
	}
	key := stagingKey(op, name)
	body, err := r.get(ctx, key, MaxMetadataSize+1<<20)
	if err == nil {
		var plain []byte
		if plain, err = r.open(body, []byte("staging:"+op+"/"+name), &metaDec); err == nil {
			if jerr := json.Unmarshal(plain, v); jerr != nil {
				err = errCorrupt{fmt.Sprintf("%v (corrupted, or written by another version)", jerr)}
			}
		}
	}
	if err != nil {
		return classify(fmt.Errorf("get staging %s/%s at %s: %w", op, name, r.where(key), err))
	}
	return nil
}

// DeleteStaging deletes every object under staging/<op>/. Deleting what is
// absent is not an error, so it is idempotent.
func (r *Repo) DeleteStaging(ctx context.Context, op string) error {
	if err := checkStagingName("operation", op); err != nil {
		return err
	}
	prefix := r.key(stagingDir + op + "/")
	var keys []string
	// Collect first: not every store lists consistently while deleting.
	err := r.list(ctx, prefix, func(o store.Object) error {
		keys = append(keys, o.Key)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete staging %s: list %s: %w", op, r.st.Location()+"/"+prefix, err)
	}
	for _, k := range keys {
		if err := r.st.Delete(ctx, k); err != nil {
			return fmt.Errorf("delete staging %s: %s: %w", op, r.st.Location()+"/"+k, err)
		}
	}
	return nil
}

// ListStaging returns the names of the objects of operation op, in lexical
// order (the ".json.zst" suffix removed).
func (r *Repo) ListStaging(ctx context.Context, op string) ([]string, error) {
	if err := checkStagingName("operation", op); err != nil {
		return nil, err
	}
	prefix := r.key(stagingDir + op + "/")
	var names []string
	err := r.list(ctx, prefix, func(o store.Object) error {
		if name, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, prefix), ".json.zst"); ok && !strings.Contains(name, "/") {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list staging %s at %s: %w", op, r.st.Location()+"/"+prefix, err)
	}
	return names, nil
}
