// Package dns defines how drorch points a service's name at the active site.
package dns

import "context"

// Record is one record set: every record of a name and type.
type Record struct {
	Name   string   // fully qualified, with the trailing dot: "app.example.com."
	Type   string   // "A", "AAAA" or "CNAME"
	TTL    uint32   // seconds
	Values []string // addresses, or the CNAME target (fully qualified)
}

// DNS changes and reads record sets on an authoritative server. Errors are
// classified as in package drivers: a refused key or a zone the server is not
// authoritative for is permanent; a server that does not answer wraps
// drivers.ErrUnreachable.
type DNS interface {
	// Describe names the server and zone, without secrets.
	Describe() string

	// Set replaces the record set of r.Name and r.Type with r, atomically
	// (one update), and returns once the authoritative server answers with
	// the new values. Setting the values already there is a no-op.
	Set(ctx context.Context, r Record) error

	// Get asks the authoritative server for the record set of name and
	// type; an absent set is returned with no values and no error.
	Get(ctx context.Context, name, typ string) (Record, error)
}
