// Package cli is the meridian command line: one file per subcommand, flag
// parsing and wiring only; the work happens in the feature packages.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
)

// Version is set at build time with -ldflags "-X …/internal/cli.Version=…".
var Version = "dev"

// Main runs the CLI with args and returns the process exit code.
func Main(args []string) int {
	return run(args, os.Stdout, os.Stderr)
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "meridian:", ee.msg)
		}
		return ee.code
	}
	if st, ok := status.FromError(err); ok {
		fmt.Fprintf(stderr, "meridian: %s: %s\n", st.Code(), st.Message())
		return 1
	}
	fmt.Fprintln(stderr, "meridian:", err)
	return 1
}

// exitError ends the command with a specific exit code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "meridian",
		Short: "Run a gRPC API across clusters and regions",
		Long: `Meridian runs a gRPC API in several regions at once, with authentication,
REST/JSON transcoding and health checks that tell the truth — the job of
Google's ESP, Cloud Endpoints and Ingress for Anthos — in one binary, on any
Kubernetes clusters or on one machine.

Its reference service is the Session Scheduler, which starts hosted notebook
sessions (CPU, GPU and TPU pools, queues, weekly quotas, idle timeouts).`,
		Example: `  # The whole system on this machine
  meridian dev

  # Start a notebook session and wait until it serves
  meridian sessions create --pool cpu --wait

  # Run one region's scheduler against a shared PostgreSQL
  meridian scheduler --region us-central1 --store postgres://meridian@db/meridian`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newSchedulerCmd(),
		newGatewayCmd(),
		newEdgeCmd(),
		newControllerCmd(),
		newStatusCmd(),
		newWorkloadCmd(),
		newProbeCmd(),
		newSessionsCmd(),
		newQuotaCmd(),
		newDevCmd(),
	)
	return root
}
