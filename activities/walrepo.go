package activities

import (
	"github.com/drorch/drorch/internal/repo"
)

// OpenRepo opens the repository of plan at site with a's config, for the
// commands that run outside a worker (drorch-worker wal-push, wal-fetch).
// Errors are classified as the activities' are. (A function, not a
// method: every exported method of Activities is registered as an
// activity.)
func OpenRepo(a *Activities, plan, site string) (*repo.Repo, error) {
	return a.repo(plan, site)
}

// Secrets returns the secret values of plan at site that a command's
// output must not show: the site's store keys and the plan's key.
func Secrets(a *Activities, plan, site string) []string {
	var out []string
	if s, err := a.cfg.Site(site); err == nil {
		out = append(out, s.Store.AccessKey.Value(), s.Store.SecretKey.Value())
	}
	if p, err := a.cfg.Plan(plan); err == nil && p.Encryption != nil {
		out = append(out, p.Encryption.Key.Value())
	}
	return out
}
