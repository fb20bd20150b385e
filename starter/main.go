// Command drorch is the operator's CLI: it starts drorch's workflows on
// Temporal, shows their live progress and prints their results. It needs
// only the Temporal connection; the workers hold the sites' credentials.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/drorch/drorch/deployments/dev"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/connect"
	"github.com/drorch/drorch/internal/zlog"
	"github.com/drorch/drorch/workflows"
)

// cli holds the global flags and what they lead to.
type cli struct {
	configPath string
	conn       connect.Flags
	logLevel   string
	uiAddress  string
	taskQueue  string
	wait       bool
	json       bool
}

func main() {
	if err := newRoot().Execute(); err != nil {
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	c := &cli{}
	root := &cobra.Command{
		Use:           "drorch",
		Short:         "drorch protects data sets across sites with durable Temporal workflows",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&c.configPath, "config", "", "deployment config (default $DRORCH_CONFIG, then ./drorch.yaml, then the embedded dev config)")
	pf.StringVar(&c.conn.Address, "address", "", "Temporal frontend host:port (env TEMPORAL_ADDRESS)")
	pf.StringVar(&c.conn.Namespace, "namespace", "", "Temporal namespace (env TEMPORAL_NAMESPACE)")
	pf.StringVar(&c.conn.TLSCert, "tls-cert", "", "TLS client certificate (env TEMPORAL_TLS_CERT)")
	pf.StringVar(&c.conn.TLSKey, "tls-key", "", "TLS client key (env TEMPORAL_TLS_KEY)")
	pf.StringVar(&c.conn.TLSCA, "tls-ca", "", "CA of the Temporal server (env TEMPORAL_TLS_CA)")
	pf.StringVar(&c.conn.ServerName, "tls-server-name", "", "server name to verify (env TEMPORAL_TLS_SERVER_NAME)")
	pf.StringVar(&c.logLevel, "log-level", "warn", "log level of the Temporal client: debug, info, warn, error")
	pf.StringVar(&c.uiAddress, "ui", envOr("DRORCH_UI_ADDRESS", "http://127.0.0.1:8233"), "Temporal Web UI address, for links (env DRORCH_UI_ADDRESS)")
	pf.StringVar(&c.taskQueue, "task-queue", workflows.TaskQueue, "task queue the workers serve")
	root.AddCommand(c.backupCmd(), c.transmitCmd(), c.restoreCmd(), c.pointsCmd(), c.failoverCmd(), c.failbackCmd(), c.completeCmd(), c.permanentFailoverCmd(), c.approveCmd(), c.cancelCmd(), c.statusCmd(), c.reportCmd(), c.drillCmd(), c.checkCmd(), c.scheduleCmd(), c.forgetCmd())
	return root
}

// waitFlags adds --wait and --json to a command that starts a workflow.
func (c *cli) waitFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&c.wait, "wait", false, "wait for the result, showing live progress")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the result (or the started run) as one JSON object")
}

// loadConfig reads the config without resolving secrets: the CLI needs the
// plan and site names and the Temporal connection, never a credential.
func (c *cli) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(c.configPath, config.WithoutSecrets())
	if errors.Is(err, config.ErrNoConfig) {
		return config.Parse(dev.Name, dev.Config, config.WithoutSecrets())
	}
	return cfg, err
}

func (c *cli) connect() (*config.Config, *clientConn, error) {
	cfg, err := c.loadConfig()
	if err != nil {
		return nil, nil, err
	}
	s, err := connect.Settings(c.conn, cfg.Temporal)
	if err != nil {
		return nil, nil, err
	}
	zl, err := zlog.New(os.Stderr, c.logLevel)
	if err != nil {
		return nil, nil, err
	}
	cl, err := connect.Dial(s, zl)
	if err != nil {
		return nil, nil, err
	}
	return cfg, &clientConn{Client: cl, namespace: s.Namespace}, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// open connects to Temporal after checking, in the config, that the plan and
// sites exist: mistakes fail before anything starts.
func (c *cli) open(plan string, sites ...string) (*clientConn, error) {
	cfg, cc, err := c.connect()
	if err != nil {
		return nil, err
	}
	if err := checkPlan(cfg, plan, sites...); err != nil {
		cc.Close()
		return nil, err
	}
	return cc, nil
}

// checkPlan fails early, before anything starts, on an unknown plan or site.
func checkPlan(cfg *config.Config, plan string, sites ...string) error {
	if plan == "" {
		return errors.New("--plan is required")
	}
	p, err := cfg.Plan(plan)
	if err != nil {
		return err
	}
	for _, s := range sites {
		if s != "" && !p.HasSite(s) {
			return fmt.Errorf("plan %s has no site %q: its sites are %s", plan, s, siteList(p.Sites()))
		}
	}
	return nil
}

// siteList names a plan's sites for a message: "a and b", "a, b and c".
func siteList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
