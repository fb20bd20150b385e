package workflows

import (
	"time"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

// BackupInput starts a backup. Only Plan is required:
//
//	temporal workflow start --type Backup --task-queue drorch --input '{"plan":"files"}'
type BackupInput struct {
	Plan string `json:"plan"`
	Site string `json:"site,omitempty"` // default: the plan's active site
	// Full reads every file, even those whose size and modification time
	// match the latest restore point's.
	Full bool `json:"full,omitempty"`
}

// BackupResult describes the restore point a backup committed.
type BackupResult struct {
	Plan       string      `json:"plan"`
	Site       string      `json:"site"`
	Point      string      `json:"point"`
	Snapshot   time.Time   `json:"snapshot"`
	Epoch      uint64      `json:"epoch"`
	Repository string      `json:"repository"`
	Source     string      `json:"source"`
	Totals     repo.Totals `json:"totals"`
	Skipped    int64       `json:"skipped"` // devices, FIFOs, sockets
	BytesRead  int64       `json:"bytesRead"`
	BytesNew   int64       `json:"bytesNew"`      // plaintext of chunks the repository lacked
	Uploaded   int64       `json:"bytesUploaded"` // stored size of those chunks
	Chunks     int64       `json:"chunks"`
	ChunksNew  int64       `json:"chunksNew"`
	Reread     int64       `json:"reread"`
	// Unchanged files were not read: their size and modification time
	// matched the parent restore point, whose chunks they reuse.
	Unchanged      int64  `json:"unchanged"`
	BytesUnchanged int64  `json:"bytesUnchanged"`
	Parent         string `json:"parent,omitempty"`
	// HookWarnings are the failures of the source's post hooks: they ran
	// after the data was read, so the backup stands, but what they should
	// have undone (a freeze, a snapshot) may still be in place.
	HookWarnings []string `json:"hookWarnings,omitempty"`
	Duration     Duration `json:"duration"`
}

// TransmitInput starts a transmission of a restore point between sites.
type TransmitInput struct {
	Plan  string `json:"plan"`
	From  string `json:"from,omitempty"`  // default: the plan's active site
	To    string `json:"to,omitempty"`    // default: the other site
	Point string `json:"point,omitempty"` // default: the latest valid point at From
}

// TransmitResult describes a transmission.
type TransmitResult struct {
	Plan         string    `json:"plan"`
	From         string    `json:"from"`
	To           string    `json:"to"`
	Point        string    `json:"point"`
	Snapshot     time.Time `json:"snapshot"`
	AlreadyThere bool      `json:"alreadyThere"` // the destination already held the point
	Chunks       int64     `json:"chunks"`
	ChunksCopied int64     `json:"chunksCopied"`
	BytesCopied  int64     `json:"bytesCopied"`
	Bytes        int64     `json:"bytes"` // logical size of the point
	RPO          Duration  `json:"rpo"`   // age of the point when it became valid at To
	Duration     Duration  `json:"duration"`
}

// RestoreInput starts a restore.
type RestoreInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site,omitempty"`  // default: the plan's standby site (the one not active)
	Point string `json:"point,omitempty"` // default: the latest valid point at Site
	To    string `json:"to,omitempty"`    // default: the plan's source at Site
	// KeepSetuid recreates setuid/setgid bits from a repository without a key.
	KeepSetuid bool `json:"keepSetuid,omitempty"`
	// Force overwrites the plan's own data at a site that takes writes: the
	// plan's active site, or one whose access resources are read-write.
	Force bool `json:"force,omitempty"`
	// Refresh marks the warm-standby refresh of the protection cycle: the
	// target must be a standby that holds no writes of its own (refreshOK).
	Refresh bool `json:"refresh,omitempty"`
	// At (postgres source): restore the newest base backup that ended by
	// this time and recover the WAL up to it (point-in-time recovery).
	At time.Time `json:"at,omitzero"`
}

// RestoreResult describes a restore.
type RestoreResult struct {
	Plan         string    `json:"plan"`
	Site         string    `json:"site"`
	Point        string    `json:"point"`
	Snapshot     time.Time `json:"snapshot"`
	Target       string    `json:"target"`
	Entries      int64     `json:"entries"`
	Files        int64     `json:"files"`
	Bytes        int64     `json:"bytes"`
	BytesWritten int64     `json:"bytesWritten"`
	Chunks       int64     `json:"chunksVerified"`
	// ChunksLocal and BytesLocal were already in the target's files at the
	// same place (verified by SHA-256), not fetched from the store.
	ChunksLocal int64    `json:"chunksLocal"`
	BytesLocal  int64    `json:"bytesLocal"`
	Duration    Duration `json:"duration"`
	// RecoveredTo (postgres source, server started) is the commit time of
	// the last transaction the recovery replayed: what the data reaches.
	RecoveredTo time.Time `json:"recoveredTo,omitzero"`
}

// PointsInput lists the restore points of a plan at a site.
type PointsInput struct {
	Plan string `json:"plan"`
	Site string `json:"site,omitempty"` // default: the plan's active site
}

// PointsResult lists restore points, oldest first.
type PointsResult struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
	activities.ListPointsResult
}

// Progress is what the "progress" query returns.
type Progress struct {
	Operation string               `json:"operation"`
	Plan      string               `json:"plan"`
	Site      string               `json:"site,omitempty"`
	Step      string               `json:"step"` // current step, "done" or "failed"
	Waiting   string               `json:"waiting,omitempty"`
	Steps     []StepProgress       `json:"steps"`
	Live      *activities.Progress `json:"live,omitempty"` // of the running step
	// Done counts the parts of the running step that finished, when it
	// runs as several activities (a parallel upload or copy); the CLI adds
	// the running parts' heartbeats to it.
	Done  *activities.Progress `json:"done,omitempty"`
	Error string               `json:"error,omitempty"`
	// Retrying is filled in by the CLI, not the workflow: the running
	// activity's attempt and last failure when it is being retried (a
	// server that does not answer, say).
	Retrying string `json:"retrying,omitempty"`
}

// StepProgress is one step, finished or running.
type StepProgress struct {
	Name     string    `json:"name"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Duration Duration  `json:"duration,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// FailoverInput starts a failover: planned (a switchover: the old active site
// is fenced, a final sync loses nothing) or unplanned (the old active site
// may be dark).
//
//	temporal workflow start --type Failover --task-queue drorch --workflow-id drorch/files/switch \
//	  --input '{"plan":"files","mode":"unplanned"}'
type FailoverInput struct {
	Plan  string `json:"plan"`
	Mode  string `json:"mode,omitempty"`  // planned (default) or unplanned
	Point string `json:"point,omitempty"` // default: the latest valid point at the target (after the final sync)
	// Force goes on where the failover would stop for safety: the old active
	// site answered but refused its fence (unplanned), or the target is not
	// read-only. The report says what was forced.
	Force bool `json:"force,omitempty"`
	// To is the site to fail over to: one of the plan's sites other than
	// the active one. Default: of two sites, the other; of three or more,
	// the first of them in order (primary, then secondaries) that answers.
	To string `json:"to,omitempty"`
}

// SwitchReport is what a switching workflow returns and stores at the site
// that ends up active.
type SwitchReport struct {
	ID           string                   `json:"id"`
	Plan         string                   `json:"plan"`
	Operation    string                   `json:"operation"`
	Mode         string                   `json:"mode,omitempty"`
	From         string                   `json:"from"`
	To           string                   `json:"to"`
	Started      time.Time                `json:"started"`
	Finished     time.Time                `json:"finished"`
	Outcome      string                   `json:"outcome"` // completed, failed, compensated
	Error        string                   `json:"error,omitempty"`
	Fenced       bool                     `json:"fenced"`
	FenceNote    string                   `json:"fenceNote,omitempty"`
	Point        string                   `json:"point,omitempty"`
	PointTime    time.Time                `json:"pointTime,omitzero"`
	Epoch        uint64                   `json:"epoch,omitempty"`
	Restored     bool                     `json:"restored"` // false: the standby already held the point
	RTO          Duration                 `json:"rto"`      // start → DNS verified
	RPO          Duration                 `json:"rpo"`      // fence (or start) − restore point time
	DNS          []activities.RecordState `json:"dns,omitempty"`
	Steps        []StepProgress           `json:"steps"`
	Compensation []string                 `json:"compensation,omitempty"`
	Notes        []string                 `json:"notes,omitempty"` // what went wrong without stopping the operation
	// Failback: the sync rounds run, the returning site's lag after the
	// last one, and the restore point that preserved the returning site's
	// own data before it was overwritten.
	Rounds    int      `json:"rounds,omitempty"`
	Lag       Duration `json:"lag,omitempty"`
	Preserved string   `json:"preserved,omitempty"`

	// TimeSaved is how long restoring the point took when a warm refresh
	// put it into the standby (0: unknown), when Restored is false.
	TimeSaved Duration `json:"timeSaved,omitempty"`

	// RecoveredTo (postgres source) is the last transaction the restored
	// server replayed from the shipped WAL; the RPO is counted to it.
	RecoveredTo time.Time `json:"recoveredTo,omitzero"`
}
