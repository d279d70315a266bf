package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/spf13/cobra"
)

func newDevCmd() *cobra.Command {
	var stateDir string
	var portBase int
	var fresh bool
	var workload, nbHostSuffix string
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole system on this machine (three regions)",
		Long: `Run every region (us-central1, europe-west1, asia-east1) as real OS processes
on this machine, sharing one embedded store, and print how to use it. State
(the store, logs, session output and dev.json) lives in --state_dir; a
second run resumes it unless --fresh is given. Ctrl-C stops everything.

Ports are laid out from --port_base (default 8000): the control endpoint at
base+79, region i's scheduler at base+100+i and its metrics at base+110+i.
dev.json lists every address once all is up, for scripts.

Each gateway reaches its scheduler over a unix socket,
STATE/REGION/scheduler.sock, the only place a scheduler trusts an asserted
identity: its TCP port serves health and reflection, and answers any other
call UNAUTHENTICATED, so that a notebook cannot act as another user. The
state directory is 0700; run as root, each workload runs as a uid of its own (see
docs/scheduler.md). stop-region, start-region and restart-scheduler
authenticate with the control token in dev.json. Sessions' workloads outlive
a scheduler's restart or crash and are adopted by the next one; Ctrl-C stops
them with everything else.

A RUNNING session's endpoint is its notebook on the edge,
https://127.0.0.1:8443/notebooks/{session_id}/ (meridian sessions open NAME);
with --notebook_host_suffix=.notebooks.localhost, its own host,
https://{session_id}.notebooks.localhost:8443/ (browsers and curl resolve
*.localhost to this machine).
--workload=jupyter runs Jupyter Server as every session (Debian packages
jupyter-core, jupyter-server, python3-ipykernel); the default, builtin, is a
placeholder page that needs nothing installed.`,
		Example: `  meridian dev
  meridian dev --fresh --state_dir /tmp/meridian --port_base 18000
  meridian dev --workload=jupyter          # every session a real Jupyter Server
  meridian dev --notebook_host_suffix=.notebooks.localhost   # notebooks at https://{session_id}.notebooks.localhost:8443/
  meridian dev stop-region us-central1     # SIGKILL a region, for failure drills
  meridian dev start-region us-central1
  meridian dev restart-scheduler us-central1 --signal KILL   # sessions keep running`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), "warn")
			if err != nil {
				return err
			}
			if err := undumpable(); err != nil {
				return err
			}
			return dev.Run(cmd.Context(), dev.Options{StateDir: stateDir, PortBase: portBase, Fresh: fresh, Out: cmd.OutOrStdout(), Log: log,
				Workload: workload, NotebookHostSuffix: nbHostSuffix})
		},
	}
	cmd.PersistentFlags().StringVar(&stateDir, "state_dir", defaultStateDir(), "directory for the store, logs and dev.json")
	cmd.Flags().IntVar(&portBase, "port_base", 8000, "first port of the layout")
	cmd.Flags().BoolVar(&fresh, "fresh", false, "delete the previous run's state and start clean")
	cmd.Flags().StringVar(&nbHostSuffix, "notebook_host_suffix", "", "give notebooks the host form, e.g. .notebooks.localhost: https://{session_id}.notebooks.localhost:PORT/ (browsers resolve *.localhost to this machine; empty: the path form)")
	cmd.Flags().StringVar(&workload, "workload", dev.WorkloadBuiltin, "what sessions run: builtin (a placeholder page) or jupyter (Jupyter Server; Debian: "+dev.JupyterPackages+")")
	var user string
	var ttl time.Duration
	tokenCmd := &cobra.Command{
		Use:     "token --user NAME",
		Short:   "Mint a token from the dev issuer (for --token, curl, grpcurl)",
		Example: "  export MERIDIAN_TOKEN=$(meridian dev token --user alice)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := dev.MintToken(stateDir, user, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	tokenCmd.Flags().StringVar(&user, "user", "", "the token's subject (required)")
	tokenCmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	cmd.AddCommand(tokenCmd)
	for _, action := range []string{"stop", "start"} {
		cmd.AddCommand(&cobra.Command{
			Use:   action + "-region NAME",
			Short: map[string]string{"stop": "Kill a region's processes with SIGKILL", "start": "Start a stopped region again"}[action],
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				msg, err := dev.Control(cmd.Context(), stateDir, args[0], action)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			},
		})
	}
	var signal string
	restart := &cobra.Command{
		Use:   "restart-scheduler REGION",
		Short: "Restart a region's scheduler; its sessions keep running",
		Long: `End a region's scheduler with SIGTERM (a restart, the default) or SIGKILL
(--signal KILL, a crash), start it again and wait until it serves. Sessions'
workloads keep running throughout, and the new scheduler adopts them.`,
		Example: "  meridian dev restart-scheduler us-central1 --signal KILL",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			msg, err := dev.RestartScheduler(cmd.Context(), stateDir, args[0], signal)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	restart.Flags().StringVar(&signal, "signal", "TERM", "how the scheduler ends: TERM (a restart) or KILL (a crash)")
	cmd.AddCommand(restart)
	return cmd
}

func defaultStateDir() string {
	if d := os.Getenv("MERIDIAN_DEV_STATE"); d != "" {
		return d
	}
	return ".meridian-dev"
}
