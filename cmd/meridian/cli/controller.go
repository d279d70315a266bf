package cli

import (
	"time"

	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/meridian-gw/meridian/kube/controller"
	"github.com/spf13/cobra"
)

func newControllerCmd() *cobra.Command {
	var o controller.Options
	var kubeconfig, logLevel string
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the multi-cluster controller (derived Services, published endpoints, status)",
		Long: `Run in the config cluster, where the MultiClusterIngresses, MultiClusterServices
and Clusters are. For each MultiClusterService and each live Cluster it selects
(spec.kubeconfigSecretRef: a Secret in --namespace holding the member's
kubeconfig), it keeps a Service in the member — same namespace and name, the
template's selector and ports, labels meridian.dev/derived-from and
meridian.dev/config-cluster — and publishes that Service's ready pod
addresses (or, with the MCS annotation meridian.dev/endpoints: LoadBalancer,
its load-balancer address) back in the config cluster as EndpointSlices named
<mcs>-<cluster>, labelled multicluster.kubernetes.io/service-name and
meridian.dev/cluster, for 'meridian edge --source=kubernetes'.

Member changes are watched, not polled: a Pod becoming ready in a member is
published in well under a second. A member whose apiserver stops answering
is marked Reachable=False (reason Unreachable) on its Cluster, and its last
endpoints stay published with the annotation meridian.dev/stale: "true"
until it is back. A missing Secret or an unusable kubeconfig is the reason
SecretMissing or KubeconfigInvalid, with what to do in the message.
Kubeconfigs must be self-contained: exec and auth-provider plugins and file
paths are refused.

Status: MultiClusterServices (Ready; per cluster ready/total/stale),
MultiClusterIngresses (VIP, backends), Clusters (Reachable, endpoints).
Finalizers delete derived Services when an MCS or a Cluster goes.

With --leader_elect, replicas share the Lease meridian-controller in
--namespace and only the leader acts. /metrics, /healthz and /readyz are on
--admin_listen.`,
		Example: `  # Against the config cluster from a workstation
  meridian controller --kubeconfig ~/.kube/config-cluster --namespace meridian

  # In the config cluster (in-cluster credentials), two replicas
  meridian controller --leader_elect --namespace=$(POD_NAMESPACE) --admin_listen 0.0.0.0:8081`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			o.Log = log.With("component", "controller")
			if o.Config, err = restConfig(kubeconfig); err != nil {
				return err
			}
			c, err := controller.New(o)
			if err != nil {
				return err
			}
			return c.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the config cluster (default: in-cluster credentials, else $KUBECONFIG)")
	fl.StringVar(&o.Namespace, "namespace", "meridian", "namespace of the members' kubeconfig Secrets, the Lease and the edge's Service")
	fl.StringVar(&o.ClusterID, "cluster_id", "meridian", "names this config cluster on derived Services (label meridian.dev/config-cluster)")
	fl.BoolVar(&o.LeaderElect, "leader_elect", false, "act only while holding the Lease (run two replicas with it)")
	fl.StringVar(&o.LeaseName, "lease_name", "meridian-controller", "the leader election Lease's name")
	fl.DurationVar(&o.LeaseDuration, "lease_duration", 15*time.Second, "how long a Lease holds without renewal")
	fl.DurationVar(&o.RenewDeadline, "lease_renew_deadline", 10*time.Second, "how long the leader tries to renew before it gives up")
	fl.DurationVar(&o.RetryPeriod, "lease_retry_period", 2*time.Second, "how often candidates try to take the Lease")
	fl.StringVar(&o.AdminListen, "admin_listen", "127.0.0.1:8081", "/metrics, /healthz and /readyz address (empty: off)")
	fl.IntVar(&o.Workers, "workers", 4, "MultiClusterServices reconciled in parallel")
	fl.DurationVar(&o.MemberProbeInterval, "member_probe_interval", time.Second, "how often each member's apiserver is probed")
	fl.DurationVar(&o.MemberProbeTimeout, "member_probe_timeout", 2*time.Second, "how long one probe may take")
	fl.IntVar(&o.MemberUnreachableAfter, "member_unreachable_after", 2, "failed probes in a row that make a member unreachable")
	fl.DurationVar(&o.MemberWriteTimeout, "member_write_timeout", 10*time.Second, "how long one write to a member may take")
	fl.Float32Var(&o.MemberQPS, "member_qps", 50, "requests per second to each member")
	fl.IntVar(&o.MemberBurst, "member_burst", 100, "request burst to each member")
	fl.IntVar(&o.MaxEndpointsPerCluster, "max_endpoints_per_cluster", 10000, "endpoints published per (MultiClusterService, member); more are left out and the MCS says so")
	fl.StringVar(&o.EdgeService, "edge_service", "meridian-edge", "Service in --namespace whose load-balancer address is the VIP of MCIs without a static-ip annotation ('-': none)")
	fl.StringVar(&logLevel, "log_level", "info", "debug, info, warn or error")
	return cmd
}
