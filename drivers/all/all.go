// Package all wires the drivers to the deployment config: the one place that
// knows which driver a config's "driver" field names (no init() magic).
package all

import (
	"fmt"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	execaccess "github.com/drorch/drorch/drivers/access/exec"
	httpaccess "github.com/drorch/drorch/drivers/access/http"
	"github.com/drorch/drorch/drivers/access/postgres"
	"github.com/drorch/drorch/drivers/access/s3bucket"
	"github.com/drorch/drorch/drivers/dns"
	"github.com/drorch/drorch/drivers/dns/rfc2136"
	"github.com/drorch/drorch/internal/config"
)

// Access opens the access driver a config item names.
func Access(c *config.Access) (access.Access, error) {
	switch c.Driver {
	case "postgres":
		return postgres.New(postgres.Config{
			Host: c.Host, Port: c.Port, User: c.User, Password: c.Password,
			Database: c.Database, SSLMode: c.SSLMode, Timeout: c.Timeout, Roles: c.Roles,
		})
	case "s3bucket":
		return s3bucket.New(s3bucket.Config{
			Endpoint: c.Endpoint, Bucket: c.Bucket, Region: c.Region, AccessKey: c.AccessKey, SecretKey: c.SecretKey,
			Insecure: c.Insecure, CAFile: c.CAFile, Timeout: c.Timeout, Users: c.Users, Groups: c.Groups,
		})
	case "exec":
		return execaccess.New(execaccess.Config{SetMode: c.SetMode, Status: c.Status, Env: c.Env, Dir: c.Dir, Timeout: c.Timeout})
	case "http":
		return httpaccess.New(httpaccess.Config{
			URL: c.URL, StatusURL: c.StatusURL, Headers: c.Headers, Timeout: c.Timeout, CAFile: c.CAFile, Insecure: c.Insecure,
		})
	}
	return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "unknown access driver %q", c.Driver)
}

// DNS opens the DNS driver of a record.
func DNS(r *config.DNSRecord) (dns.DNS, error) {
	if r.Driver != "rfc2136" {
		return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "unknown DNS driver %q", r.Driver)
	}
	d, err := rfc2136.New(rfc2136.Config{
		Server: r.Server, Zone: r.Zone, Timeout: r.Timeout,
		TSIG: rfc2136.TSIG{Name: r.TSIG.Name, Algorithm: r.TSIG.Algorithm, Secret: r.TSIG.Secret},
	})
	if err != nil {
		return nil, fmt.Errorf("dns %s %s: %w", r.Name, r.Type, err)
	}
	return d, nil
}
