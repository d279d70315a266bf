package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-gw/meridian/dev"
	"github.com/meridian-gw/meridian/edge"
	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var admin, stateDir, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Describe the edge: VIP, clusters, endpoint health, RTT, in-flight, routing order",
		Long: `Like kubectl describe mci: what the edge serves, how each cluster and
endpoint is doing, and where new requests go now. Reads the edge's
/api/status (--admin, or the running dev topology's).`,
		Example: `  meridian status --admin 127.0.0.1:8080
  meridian status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if admin == "" {
				info, err := dev.ReadInfo(stateDir)
				if err != nil {
					return fmt.Errorf("--admin not given and %w", err)
				}
				admin = info.Admin
			}
			client := &http.Client{Timeout: 5 * time.Second}
			resp, err := client.Get("http://" + strings.TrimPrefix(admin, "http://") + "/api/status")
			if err != nil {
				return fmt.Errorf("reaching the edge at %s: %w", admin, err)
			}
			defer resp.Body.Close()
			var st edge.Status
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				return fmt.Errorf("edge status: %w", err)
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "Name:        %s\nVIP:         %s\nRegion:      %s\nLoaded:      %s\n", st.MCI, st.VIP, st.Region, st.LoadedAt.Format(time.RFC3339))
			if st.LastError != "" {
				fmt.Fprintf(out, "Last reload: FAILED: %s\n", st.LastError)
			}
			for _, w := range st.Warnings {
				fmt.Fprintf(out, "Warning:     %s\n", w)
			}
			for _, p := range st.Pools {
				fmt.Fprintf(out, "\nBackend %s (health check %s)\n", p.Name, p.HealthCheck)
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "  ORDER\tREGION\tLOAD\tCLUSTER\tENDPOINT\tHEALTH\tRTT\tIN-FLIGHT\tREQUESTS\tFAILURES\tLAST CHECK")
				for i, r := range p.Routing {
					for _, e := range r.Endpoints {
						h := "healthy"
						switch {
						case e.Draining:
							h = "draining"
						case e.Ejected:
							h = "ejected"
						case !e.Healthy:
							h = "unhealthy"
						}
						fmt.Fprintf(tw, "  %d\t%s\t%.0f%%\t%s\t%s\t%s\t%.1fms\t%d\t%d\t%d\t%s\n", i+1, r.Region, r.Load*100, e.Cluster, e.Address,
							h, e.RTTMs, e.InFlight, e.Requests, e.Failures, e.LastCheck)
					}
				}
				_ = tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", "", "the edge's admin address (default: from the dev topology's dev.json)")
	cmd.Flags().StringVar(&stateDir, "state_dir", defaultStateDir(), "dev topology state directory, when --admin is not given")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}
