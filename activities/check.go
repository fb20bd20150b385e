package activities

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/repo"
)

// CheckRepositoryInput says which repository to verify and how deeply.
type CheckRepositoryInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
	// ReadPercent is the share of the referenced chunks whose bodies are
	// read, decrypted, decompressed and hashed: 0 checks presence and size
	// only, 100 reads every chunk.
	ReadPercent float64 `json:"readPercent,omitempty"`
	// Seed picks the subset read when ReadPercent is under 100: the same
	// seed picks the same chunks (a resumed attempt reads on where it
	// stopped); another seed another subset, so that checks with changing
	// seeds cover the repository over time.
	Seed string `json:"seed,omitempty"`
	By   string `json:"by,omitempty"` // who checks, recorded with the damage it finds
}

// DamagedObject is one object found missing or damaged.
type DamagedObject struct {
	Kind    string `json:"kind"`   // "manifest" or "chunk"
	Object  string `json:"object"` // where it is (or should be), in the store
	Problem string `json:"problem"`
	Point   string `json:"point,omitempty"` // a restore point that needs it (for a chunk)
	Path    string `json:"path,omitempty"`  // the file in that point that needs it
}

// CheckRepositoryResult is what a check found. OK is false when anything
// is damaged; Damage lists at most MaxDamageListed objects, DamageTotal
// counts them all.
type CheckRepositoryResult struct {
	Repository     string          `json:"repository"`
	OK             bool            `json:"ok"`
	Points         int             `json:"points"`
	PointsDamaged  int             `json:"pointsDamaged"`
	Chunks         int64           `json:"chunks"` // distinct chunks the points name
	ChunksMissing  int64           `json:"chunksMissing"`
	ChunksDamaged  int64           `json:"chunksDamaged"` // present but of impossible size, or failing to read back
	ChunksRead     int64           `json:"chunksRead"`
	BytesRead      int64           `json:"bytesRead"` // plaintext verified
	ReadPercent    float64         `json:"readPercent"`
	DamageTotal    int64           `json:"damageTotal"`
	Damage         []DamagedObject `json:"damage"`
	RecordsCleared int             `json:"recordsCleared"` // damage records of chunks found sound again
}

// MaxDamageListed bounds the damaged objects a check result names; the
// result and the history stay small however much is lost.
const MaxDamageListed = 100

// checkReadWorkers bounds the chunks read at once.
const checkReadWorkers = 8

// checkBatch is how many chunks are read between two resume points.
const checkBatch = 64

// checkResume is where a retried check continues reading.
type checkResume struct {
	Next   string                `json:"next"` // hex id of the first chunk not yet read, in id order
	Result CheckRepositoryResult `json:"result"`
	Sound  []string              `json:"sound,omitempty"` // recorded-damaged chunks read back sound
}

// CheckRepository verifies the repository of a plan at a site: every
// manifest opens and decodes, every chunk a manifest names is present with
// a size such a chunk can have, and, for ReadPercent of the chunks, the
// body decrypts, decompresses and hashes to its id. Each damaged chunk is
// recorded in the repository (repo.MarkDamaged) so that the next backup or
// transmit that has the data writes it again. A retried attempt continues
// reading after the last batch it finished.
func (a *Activities) CheckRepository(ctx context.Context, in CheckRepositoryInput) (CheckRepositoryResult, error) {
	res, err := a.checkRepository(ctx, in)
	return res, temporalError(err)
}

// chunkUse is a referenced chunk: its plaintext size and who needs it.
type chunkUse struct {
	id          repo.ID
	size        int64
	point, path string
}

func (a *Activities) checkRepository(ctx context.Context, in CheckRepositoryInput) (CheckRepositoryResult, error) {
	if in.ReadPercent < 0 || in.ReadPercent > 100 {
		return CheckRepositoryResult{}, drivers.Permanentf(drivers.ReasonInvalidInput, "read percent %v must be 0 to 100", in.ReadPercent)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return CheckRepositoryResult{}, err
	}
	rep := a.startReporter(ctx, "check")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	c := &checker{repo: r, in: in, badParts: map[repo.ID]string{}, res: CheckRepositoryResult{Repository: r.Location(), ReadPercent: in.ReadPercent, Damage: []DamagedObject{}}}

	uses, err := c.manifests(ctx, rep)
	if err != nil {
		return CheckRepositoryResult{}, err
	}
	present, err := r.Chunks(ctx)
	if err != nil {
		return CheckRepositoryResult{}, err
	}
	if c.recorded, err = r.Damaged(ctx); err != nil {
		return CheckRepositoryResult{}, err
	}
	var toRead []chunkUse
	for _, u := range uses {
		stored, ok := present[u.id]
		switch {
		case !ok:
			c.res.ChunksMissing++
			c.damage(ctx, u, "missing: the object is not in the store")
		case c.badParts[u.id] != "": // read above, with the entries
			c.res.ChunksDamaged++
			c.damage(ctx, u, c.badParts[u.id])
		case r.CheckStoredSize(u.id, u.size, stored) != nil:
			c.res.ChunksDamaged++
			lo, hi := r.StoredBounds(u.size)
			what := fmt.Sprintf("a chunk of %d bytes", u.size)
			if u.size <= 0 { // named by slices only: its size is not recorded
				what = "a chunk"
			}
			c.damage(ctx, u, fmt.Sprintf("damaged: the object holds %d bytes, but %s stores in %d to %d", stored, what, lo, hi))
		case chosen(in, u.id):
			toRead = append(toRead, u)
		}
	}
	if c.err != nil {
		return CheckRepositoryResult{}, c.err
	}
	rep.Update(func(p *Progress) { p.ChunksTotal = int64(len(toRead)) })
	if err := c.read(ctx, rep, toRead); err != nil {
		return CheckRepositoryResult{}, err
	}
	if err := c.clearRecords(ctx, uses); err != nil {
		return CheckRepositoryResult{}, err
	}
	c.res.OK = c.res.DamageTotal == 0
	return c.res, nil
}

// checker holds one check's findings.
type checker struct {
	repo     *repo.Repo
	in       CheckRepositoryInput
	mu       sync.Mutex
	res      CheckRepositoryResult
	recorded map[repo.ID]struct{} // chunks recorded as damaged before this check
	sound    map[repo.ID]bool     // of those, the ones read back sound in this check
	badParts map[repo.ID]string   // entry parts present but failing to read back: the problem
	err      error                // the first failure to record damage
	// partial is set when a point could not be read whole: the chunks it
	// names beyond the damage are unknown, so no record is cleared for
	// not being needed.
	partial bool
}

// manifests opens every manifest and returns the chunks they name, sorted
// by id. A manifest that cannot be opened is damage; a store that fails to
// answer is an error (retried). The entries read count as progress: many
// points of millions of entries take longer than the stall limit.
func (c *checker) manifests(ctx context.Context, rep *reporter) ([]chunkUse, error) {
	pts, err := c.repo.Points(ctx)
	if err != nil {
		return nil, err
	}
	c.res.Points = len(pts)
	byID := map[repo.ID]chunkUse{}
	for i := len(pts) - 1; i >= 0; i-- { // newest first: a chunk is named by the newest point that needs it
		p := pts[i]
		pt, err := c.repo.OpenPoint(ctx, p.ID)
		if err != nil {
			if !damaged(err) {
				return nil, err
			}
			c.res.PointsDamaged++
			c.partial = true
			c.add(DamagedObject{Kind: "manifest", Object: c.repo.Location() + "/points/" + p.ID + ".json.zst", Problem: err.Error(), Point: p.ID})
			continue
		}
		use := func(n repo.ChunkNeed) {
			if _, ok := byID[n.ID]; !ok {
				byID[n.ID] = chunkUse{id: n.ID, size: n.Size, point: p.ID, path: n.Path}
			}
		}
		// The parts first, from the point object alone: a missing one is
		// then named as a missing chunk even though the entries it holds
		// cannot be read.
		for _, part := range pt.Parts {
			use(repo.ChunkNeed{ID: part.ID, Size: part.Size, Path: "(the restore point's entries)"})
		}
		needs, err := pt.Needs(ctx) // streams the entries, checking them
		if err != nil {
			if !damaged(err) {
				return nil, err
			}
			c.res.PointsDamaged++
			c.partial = true
			c.add(DamagedObject{Kind: "manifest", Object: c.repo.Location() + "/points/" + p.ID + ".json.zst", Problem: "its entries cannot be read: " + err.Error(), Point: p.ID})
			// A part that fails to fetch is a damaged chunk as well:
			// recorded, the next backup of these entries writes it again.
			// The read stopped at the first; the parts after it are
			// fetched here, so that one check finds them all.
			if pe := (*repo.PartError)(nil); errors.As(err, &pe) {
				if err := c.readParts(ctx, pt, pe); err != nil {
					return nil, err
				}
			}
		}
		for _, n := range needs {
			use(n)
		}
		rep.Update(func(pr *Progress) { pr.FilesDone += pt.Meta.Totals.Entries })
	}
	uses := make([]chunkUse, 0, len(byID))
	for _, u := range byID {
		uses = append(uses, u)
	}
	sort.Slice(uses, func(i, j int) bool { return bytes.Compare(uses[i].id[:], uses[j].id[:]) < 0 })
	c.res.Chunks = int64(len(uses))
	return uses, nil
}

// readParts records in badParts the entry part first failed to fetch, and
// every later part of pt that fails to fetch too (present ones: a missing
// part is found by the listing). A store that does not answer is an error.
func (c *checker) readParts(ctx context.Context, pt *repo.Point, first *repo.PartError) error {
	c.badParts[first.Part] = "damaged: " + first.Unwrap().Error()
	after := false
	for _, part := range pt.Parts {
		if part.ID == first.Part {
			after = true
			continue
		}
		if !after || c.badParts[part.ID] != "" {
			continue
		}
		plain, err := c.repo.GetChunk(ctx, part.ID)
		switch {
		case drivers.IsNotFound(err):
		case err != nil && !damaged(err):
			return err
		case err != nil:
			c.badParts[part.ID] = "damaged: " + err.Error()
		case int64(len(plain)) != part.Size:
			c.badParts[part.ID] = fmt.Sprintf("damaged: it holds %d bytes, the point object says %d", len(plain), part.Size)
		}
	}
	return nil
}

// damaged reports whether err, from opening a point or reading its
// entries, says the repository is damaged (rather than that the store did
// not answer, which is retried).
func damaged(err error) bool {
	if drivers.IsNotFound(err) {
		return true
	}
	reason, ok := drivers.IsPermanent(err)
	return ok && (reason == drivers.ReasonCorrupt || reason == repo.ReasonMissingChunk)
}

// chosen reports whether chunk id is in the share of chunks the check
// reads: SHA-256(seed || id) read as a fraction of 2^64 below ReadPercent.
func chosen(in CheckRepositoryInput, id repo.ID) bool {
	switch {
	case in.ReadPercent <= 0:
		return false
	case in.ReadPercent >= 100:
		return true
	}
	h := sha256.Sum256(append([]byte(in.Seed), id[:]...))
	return float64(binary.BigEndian.Uint64(h[:8])) < in.ReadPercent/100*(1<<64)
}

// read reads the chunks of uses (sorted by id) in batches, resuming after
// the last batch a previous attempt finished.
func (c *checker) read(ctx context.Context, rep *reporter, uses []chunkUse) error {
	var st checkResume
	if resumeDetails(ctx, &st) && st.Next != "" {
		next, err := repo.ParseID(st.Next)
		if err == nil {
			prev := c.res
			c.res = st.Result
			c.res.Chunks, c.res.Points = prev.Chunks, prev.Points
			i := sort.Search(len(uses), func(i int) bool { return bytes.Compare(uses[i].id[:], next[:]) >= 0 })
			uses = uses[i:]
			c.sound = map[repo.ID]bool{}
			for _, s := range st.Sound {
				if id, err := repo.ParseID(s); err == nil {
					c.sound[id] = true
				}
			}
		}
	}
	if c.sound == nil {
		c.sound = map[repo.ID]bool{}
	}
	for len(uses) > 0 {
		batch := uses[:min(checkBatch, len(uses))]
		uses = uses[len(batch):]
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(checkReadWorkers)
		for _, u := range batch {
			g.Go(func() error { return c.readOne(gctx, rep, u) })
		}
		if err := g.Wait(); err != nil {
			return err
		}
		if c.err != nil {
			return c.err
		}
		next := ""
		if len(uses) > 0 {
			next = uses[0].id.String()
		}
		c.mu.Lock()
		st := checkResume{Next: next, Result: c.res}
		for id := range c.sound {
			st.Sound = append(st.Sound, id.String())
		}
		c.mu.Unlock()
		if next != "" {
			rep.Resume(st)
		}
	}
	return nil
}

// readOne reads, decrypts, decompresses and hashes one chunk.
func (c *checker) readOne(ctx context.Context, rep *reporter, u chunkUse) error {
	plain, err := c.repo.GetChunk(ctx, u.id)
	problem := ""
	switch {
	case drivers.IsNotFound(err):
		problem = "missing: the object vanished while the check ran"
	case err != nil:
		if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonCorrupt {
			return err
		}
		problem = "damaged: " + err.Error()
	case u.size > 0 && int64(len(plain)) != u.size: // 0: only slices of it are named
		problem = fmt.Sprintf("damaged: it holds %d bytes, the manifest says %d", len(plain), u.size)
	}
	c.mu.Lock()
	c.res.ChunksRead++
	if problem == "" {
		c.res.BytesRead += int64(len(plain))
		if _, ok := c.recorded[u.id]; ok {
			c.sound[u.id] = true
		}
	} else if drivers.IsNotFound(err) {
		c.res.ChunksMissing++
	} else {
		c.res.ChunksDamaged++
	}
	c.mu.Unlock()
	rep.Update(func(p *Progress) { p.ChunksDone++; p.BytesDone += int64(len(plain)) })
	if problem != "" {
		c.damage(ctx, u, problem)
	}
	return nil
}

// damage lists a damaged chunk and records it in the repository.
func (c *checker) damage(ctx context.Context, u chunkUse, problem string) {
	c.add(DamagedObject{Kind: "chunk", Object: c.repo.Location() + "/" + repo.ChunkKey(u.id), Problem: problem, Point: u.point, Path: u.path})
	err := c.repo.MarkDamaged(ctx, repo.Damage{Chunk: u.id, Problem: problem, Found: time.Now().UTC(), By: c.in.By})
	if err != nil {
		c.mu.Lock()
		if c.err == nil {
			c.err = fmt.Errorf("record damaged chunk %s: %w", u.id, err)
		}
		c.mu.Unlock()
	}
}

func (c *checker) add(d DamagedObject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.DamageTotal++
	if len(c.res.Damage) < MaxDamageListed {
		c.res.Damage = append(c.res.Damage, d)
	}
}

// clearRecords removes the damage records of chunks this check read back
// sound, and of chunks that no point needs any more, when every point was
// read whole (an unreadable one may need any of them: its record must
// stay, or the next backup would take the damaged chunk as present).
func (c *checker) clearRecords(ctx context.Context, uses []chunkUse) error {
	needed := make(map[repo.ID]bool, len(uses))
	for _, u := range uses {
		needed[u.id] = true
	}
	for id := range c.recorded {
		if !c.sound[id] && (needed[id] || c.partial) {
			continue
		}
		if err := c.repo.ClearDamaged(ctx, id); err != nil {
			return err
		}
		c.res.RecordsCleared++
	}
	return nil
}
