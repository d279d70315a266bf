package cli

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/spf13/cobra"
)

func newQuotaCmd() *cobra.Command {
	var c clientFlags
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Show your weekly accelerator quota",
		Long: `Show, per quota group (gpu, tpu), the weekly limit, the hours used (ended
sessions and the running part of live ones), the hours projected (what live
sessions may still use: admission refuses a session when this reaches the
limit), and when the week resets.`,
		Example: "  meridian quota --endpoint localhost:8443",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withClient(cmd, &c, func(ctx context.Context, cl schedulerv1.SessionSchedulerClient) error {
				q, err := cl.GetQuota(ctx, &schedulerv1.GetQuotaRequest{})
				if err != nil {
					return err
				}
				if c.output == "json" {
					return printJSON(cmd.OutOrStdout(), q)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "GROUP\tUSED\tPROJECTED\tLIMIT\tRESETS\tPOOLS")
				for _, u := range q.Usage {
					fmt.Fprintf(tw, "%s\t%.1fh\t%.1fh\t%.1fh\t%s\t%v\n", u.Group, secHours(u.UsedSeconds), secHours(u.ProjectedSeconds),
						secHours(u.LimitSeconds), u.ResetTime.AsTime().Format(time.RFC1123), u.Pools)
				}
				return tw.Flush()
			})
		},
	}
	c.register(cmd)
	return cmd
}

func secHours(s int64) float64 { return float64(s) / 3600 }
