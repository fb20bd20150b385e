// Package datapath is drorch's data-path engine: the upload pipeline that
// reads a source, cuts it into content-defined chunks and stores the new ones
// in a repository, and the restorer that fetches, verifies and writes a
// restore point's chunks into a target.
//
// It knows nothing of Temporal, as restic's archiver and restorer know
// nothing of how they are scheduled: it reports progress and resume points
// through a Reporter, stops when its context ends, and marks errors no retry
// can fix with drivers.Permanent. The activities package is its adapter: it
// reads configuration and resume details, opens repositories, sources and
// targets, calls into here and turns errors into Temporal's.
package datapath
