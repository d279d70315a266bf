package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/internal/wstunnel"
	"github.com/meridian-gw/meridian/kube/source"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// edgeSource is where the edge's configuration comes from.
type edgeSource struct {
	kind       string // file or kubernetes
	kubeconfig string
	kube       source.Options
}

// validate checks the flags that go together, naming both of a conflict.
func (s *edgeSource) validate(o *edge.Options) error {
	switch s.kind {
	case "file":
		if s.kubeconfig != "" {
			return fmt.Errorf("--kubeconfig %s is for --source=kubernetes; with --source=file the config is --config", s.kubeconfig)
		}
		if s.kube.MCI != "" {
			return fmt.Errorf("--mci %s is for --source=kubernetes; with --source=file the MCI is the one in --config", s.kube.MCI)
		}
		if o.Config == "" {
			return errors.New("--config: required with --source=file (MultiClusterIngress, MultiClusterService, BackendConfig and Cluster YAML); or --source=kubernetes to watch a config cluster")
		}
	case "kubernetes":
		if o.Config != "" {
			return fmt.Errorf("--config %s and --source=kubernetes: the configuration comes from the config cluster; drop --config, or use --source=file", o.Config)
		}
		if o.CertDir == "" {
			return errors.New("--source=kubernetes needs --cert_dir: mount the MCI's tls Secret (tls.crt, tls.key) and name that directory; the edge reads no Secrets")
		}
	default:
		return fmt.Errorf("--source = %q: want file or kubernetes", s.kind)
	}
	return nil
}

// open makes the kubernetes source (nil for file mode).
func (s *edgeSource) open(log *slog.Logger) (edge.Source, error) {
	if s.kind != "kubernetes" {
		return nil, nil
	}
	cfg, err := restConfig(s.kubeconfig) // as the controller's
	if err != nil {
		return nil, err
	}
	klog.SetSlogLogger(log.With("component", "client-go")) // client-go logs through klog
	s.kube.Config, s.kube.Log = cfg, log
	return source.New(s.kube)
}

func newEdgeCmd() *cobra.Command {
	var o edge.Options
	var logLevel, maxHeader, bulkBuffer string
	var gcPercent int
	var h2 *h2LimitFlags
	var src edgeSource
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run the multi-cluster load balancer (MultiClusterIngress, MultiClusterService, BackendConfig)",
		Long: `Run what Ingress for Anthos provides, from the same resources: one TLS front
door that sends each request — native gRPC, gRPC-Web or REST/JSON — to the
nearest healthy cluster with capacity.

The configuration is the seed's MultiClusterIngress, MultiClusterService and
BackendConfig, unchanged, plus Meridian's Cluster resources (name, region,
gateway addresses), from one of two sources:

  --source=file        a multi-document YAML file or a directory (--config),
                       re-read when it changes
  --source=kubernetes  a config cluster (--kubeconfig, else in-cluster
                       credentials), watched: the MCI, the MCSes its backends
                       name, their BackendConfigs, every Cluster, and the
                       EndpointSlices meridian controller publishes; each
                       burst of changes is one hot reload (--kube_debounce)

Regions are
preferred in order: this --region, then by measured round-trip time (or the
MCI annotation meridian.dev/failover-order). A region keeps its traffic until
fewer than ~71% of its endpoints are healthy (overprovisioning 1.4), then
spills proportionally; with nothing healthy, traffic goes everywhere (panic).

Health: active checks per BackendConfig (HTTP, HTTPS, HTTP2, and GRPC:
grpc.health.v1), defaulting to every 1 s, unhealthy after 2 failures; a 503 /
NOT_SERVING drains an endpoint at once; connection failures, UNAVAILABLE and
503 eject it until an active check passes. Requests that never reached a
backend are retried elsewhere; safe-to-repeat ones (reads, CreateSession with
a request_id) also after a reset, within a 20% retry budget.

Notebooks: /notebooks/{session_id}/… goes only to the gateways of the
region the session id begins with (never retried into another region once a
gateway had it; a region down or unknown is answered at once), HTTP/1.1 and
HTTP/2, WebSockets included (Upgrade and RFC 8441 extended CONNECT). With
--notebook_host_suffix=.notebooks.example.com, the host form too: every request
to {session_id}.notebooks.example.com is that notebook's (a wildcard DNS record
and a wildcard certificate, *.notebooks.example.com, point it at the edge; the
front certificate is chosen by SNI among the MCI's tls[] secrets).

/api/status, /api/events, /metrics and a live dashboard are on --admin_listen.`,
		Example: `  meridian edge --config deploy/edge/ --region us-central1 --listen 0.0.0.0:443 --admin_listen 127.0.0.1:8080
  meridian edge --source=kubernetes --kubeconfig ~/.kube/config-cluster --region us-central1 \
    --cert_dir /etc/meridian/tls --upstream_ca /etc/meridian/upstream-ca/ca.crt
  meridian status --admin 127.0.0.1:8080`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logging.New(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if err := undumpable(); err != nil {
				return err
			}
			if err := h2.parse(); err != nil {
				return err
			}
			mh, err := parseSize(maxHeader)
			if err == nil && mh > 1<<30 {
				err = fmt.Errorf("want at most 1g")
			}
			if err != nil {
				return fmt.Errorf("--max_header_bytes = %q: %w", maxHeader, err)
			}
			o.MaxHeaderBytes = int(mh)
			if o.BulkBufferBytes, err = parseBulkBuffer(bulkBuffer); err != nil {
				return err
			}
			if err := src.validate(&o); err != nil {
				return err
			}
			if o.Source, err = src.open(log); err != nil {
				return err
			}
			if os.Getenv("GOGC") == "" && gcPercent > 0 {
				debug.SetGCPercent(gcPercent)
			}
			o.Log, o.Registry = log, serving.NewRegistry()
			ed, err := edge.New(o)
			if err != nil {
				return err
			}
			return ed.Run(cmd.Context())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&src.kind, "source", "file", "where the configuration comes from: file (--config) or kubernetes (a config cluster: --kubeconfig)")
	fl.StringVar(&o.Config, "config", "", "YAML file or directory: MultiClusterIngress, MultiClusterService, BackendConfig, Cluster (required with --source=file)")
	fl.StringVar(&src.kubeconfig, "kubeconfig", "", "--source=kubernetes: kubeconfig of the config cluster (default: in-cluster credentials, else $KUBECONFIG)")
	fl.StringVar(&src.kube.MCI, "mci", "", "--source=kubernetes: the MultiClusterIngress to serve, NAMESPACE/NAME or NAME (default: the only one)")
	fl.DurationVar(&src.kube.Debounce, "kube_debounce", source.DefaultDebounce, "--source=kubernetes: how long a change waits for more before one reload applies them all")
	fl.IntVar(&src.kube.MaxEndpoints, "kube_max_endpoints", source.DefaultMaxEndpoints, "--source=kubernetes: most published endpoints one configuration may have; more is refused and the last configuration keeps serving")
	fl.StringVar(&o.Region, "region", "", "the region this edge serves from (required)")
	fl.StringVar(&o.Listen, "listen", "", "serving address (default: the MCI's networking.gke.io/static-ip on :443, else 127.0.0.1:8443)")
	fl.StringVar(&o.AdminListen, "admin_listen", "127.0.0.1:8080", "dashboard, /api/status and /metrics address (empty: off)")
	fl.StringVar(&o.CertDir, "cert_dir", "", "directory with tls.crt/tls.key for the front (default: the MCI's tls[] secretNames beside the config, chosen by SNI; required with --source=kubernetes: the mounted Secret)")
	fl.StringVar(&o.UpstreamCA, "upstream_ca", "", "PEM CA that signed the gateways' certificates (default: system roots)")
	fl.StringVar(&o.UpstreamServerName, "upstream_server_name", "", "name the gateways' certificates are verified for (default: the address dialled, e.g. a pod IP); set it when the gateways share one certificate, as deploy/kubernetes's nginx-ssl Secret")
	fl.IntVar(&o.MaxAttempts, "max_attempts", 3, "attempts per request, the first included")
	fl.IntVar(&o.RetryBufferLimit, "retry_buffer_limit", 1<<20, "request bytes kept for a retry")
	fl.StringVar(&bulkBuffer, "bulk_buffer_bytes", "64m", "memory lent to bulk transfers, in 256 KiB buffers: responses past 1 MiB (notebook downloads) copy 256 KiB at a time, and large HTTP/2 and gRPC writes send their TLS records with one syscall; past the budget, 32 KiB copies and a syscall per record (0: never)")
	fl.StringSliceVar(&o.Idempotent, "idempotent", edge.DefaultIdempotent, "gRPC methods safe to repeat: /pkg.Service/Method globs; METHOD=N when field N (a request id) is set")
	h2 = addH2LimitFlags(cmd, &o.H2, &o.H2Prelude)
	fl.StringVar(&maxHeader, "max_header_bytes", "1m", "largest request header, HTTP/1.1 and HTTP/2 (431 beyond it; native gRPC: --h2_max_header_list_size)")
	fl.IntVar(&o.Notebooks.MaxTunnelsPerClient, "notebook_max_tunnels_per_client", edge.DefaultMaxTunnelsPerClient, "WebSockets one client address may have open to notebooks through the edge (429 beyond)")
	fl.DurationVar(&o.Notebooks.TunnelIdleTimeout, "notebook_tunnel_idle_timeout", wstunnel.DefaultIdleTimeout, "a notebook WebSocket that carries nothing either way this long is closed")
	fl.StringVar(&o.Notebooks.HostSuffix, "notebook_host_suffix", "", "the host form of notebook URLs, e.g. .notebooks.example.com: {session_id}.notebooks.example.com is that notebook (the gateways need the same flag; empty: the path form only)")
	// The live heap is a few MiB while each call allocates ~10 KiB: Go's
	// default GOGC of 100 collects dozens of times a second under load.
	fl.IntVar(&gcPercent, "go_gc_percent", 800, "Go GC target percentage (GOGC in the environment wins; set GOMEMLIMIT to cap memory)")
	fl.StringVar(&logLevel, "log_level", "info", "debug, info, warn or error")
	return cmd
}
