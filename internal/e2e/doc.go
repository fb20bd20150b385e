// Package e2e holds drorch's end-to-end tests: the workflows run on a real
// Temporal dev server, with workers (in process, or the drorch-worker binary
// when a test kills it) moving real data through one MinIO server per site.
package e2e
