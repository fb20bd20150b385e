package activities

import (
	"context"
	"fmt"

	"github.com/drorch/drorch/internal/config"
)

// SourceHooksInput names the hooks of a plan's source at a site to run
// around a backup.
type SourceHooksInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Phase string `json:"phase"` // pre or post
	OK    bool   `json:"ok"`    // post: the backup succeeded
}

// SourceHooksResult says what the hooks left for the backup's result.
type SourceHooksResult struct {
	// Hooks says the source has hooks at all.
	Hooks bool `json:"hooks,omitempty"`
	// Post is set by the pre phase when the source has post hooks, so the
	// backup runs the post phase only then.
	Post bool `json:"post,omitempty"`
	// Warnings are the errors of failed post hooks (cleaned as hook errors
	// are): a post hook runs after the data was read, so its failure does
	// not undo the backup but the operator must see it.
	Warnings []string `json:"warnings,omitempty"`
}

// SourceHooks runs the pre or the post hooks of the plan's source at the
// site, in order, each with its own timeout (else defaultHookTimeout).
// Commands get DRORCH_PLAN, DRORCH_SITE, DRORCH_PHASE and, after the backup,
// DRORCH_BACKUP_OK=1 or 0.
//
// The pre phase stops at the first failing hook, runs the post hooks (so a
// partial freeze is thawed, also when this attempt was cancelled) and
// fails with a retryable error: what a pre hook waits for (a busy volume, a
// database in a checkpoint) may be free on the next attempt. The error
// carries the end of the hook's output, cleaned as recovery-step hook
// errors are. The post phase runs every hook, even after one failed, and
// reports failures as warnings, never as an error.
func (a *Activities) SourceHooks(ctx context.Context, in SourceHooksInput) (SourceHooksResult, error) {
	res, err := a.sourceHooks(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) sourceHooks(ctx context.Context, in SourceHooksInput) (SourceHooksResult, error) {
	sc, _, err := a.sourceAt(in.Plan, in.Site)
	if err != nil {
		return SourceHooksResult{}, err
	}
	if sc.Hooks == nil {
		return SourceHooksResult{}, nil
	}
	secrets := a.cfg.SecretValues()
	if in.Phase != "pre" {
		return SourceHooksResult{Warnings: a.postHooks(ctx, in.Plan, in.Site, sc.Hooks, in.OK, secrets)}, nil
	}
	env := hookEnv(in.Plan, in.Site, "pre")
	for i, h := range sc.Hooks.Pre {
		if err := runHook(ctx, h, env, secrets); err != nil {
			err = fmt.Errorf("source %s at %s, pre hook %d: %w", sc.Path, in.Site, i+1, err)
			a.log.Warn().Str("plan", in.Plan).Str("site", in.Site).Err(err).Msg("pre hook failed: running the post hooks")
			// The post hooks thaw what the pre hooks before this one froze;
			// they run even when this attempt was cancelled.
			warnings := a.postHooks(context.WithoutCancel(ctx), in.Plan, in.Site, sc.Hooks, false, secrets)
			for _, w := range warnings {
				err = fmt.Errorf("%w; then %s", err, w)
			}
			return SourceHooksResult{}, err
		}
		a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Int("hook", i+1).Msg("pre hook passed")
	}
	return SourceHooksResult{Hooks: true, Post: len(sc.Hooks.Post) > 0}, nil
}

func (a *Activities) postHooks(ctx context.Context, plan, site string, hooks *config.SourceHooks, ok bool, secrets []string) []string {
	okEnv := "DRORCH_BACKUP_OK=0"
	if ok {
		okEnv = "DRORCH_BACKUP_OK=1"
	}
	env := append(hookEnv(plan, site, "post"), okEnv)
	var warnings []string
	for i, h := range hooks.Post {
		if err := runHook(ctx, h, env, secrets); err != nil {
			w := fmt.Sprintf("post hook %d at %s: %v", i+1, site, err)
			a.log.Warn().Str("plan", plan).Str("site", site).Int("hook", i+1).Str("error", w).Msg("post hook failed")
			warnings = append(warnings, w)
			continue
		}
		a.log.Info().Str("plan", plan).Str("site", site).Int("hook", i+1).Msg("post hook passed")
	}
	return warnings
}

func hookEnv(plan, site, phase string) []string {
	return []string{"DRORCH_PLAN=" + plan, "DRORCH_SITE=" + site, "DRORCH_PHASE=" + phase}
}
