package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

type schedulerFlags struct {
	listen, metricsListen, storeURL, region, instance, configPath string
	trustedPeers                                                  []string
	workloadCmd                                                   string
	workloadHost, workloadLogDir                                  string
	workloadGrace, drain, reconcile                               time.Duration
	logLevel                                                      string
}

func newSchedulerCmd() *cobra.Command {
	var f schedulerFlags
	cmd := &cobra.Command{
		Use:   "scheduler",
		Short: "Run the Session Scheduler (meridian.scheduler.v1.SessionScheduler)",
		Long: `Run one region's Session Scheduler: it admits sessions against weekly quotas
and per-user limits, queues them when a pool is full, starts them through a
runtime, and stops them on request, when idle, at their maximum duration or
when the owner's quota runs out.

Callers are identified by the X-Endpoint-API-UserInfo header that the gateway
forwards; it is trusted only from --trusted_peers (loopback by default).
Serves grpc.health.v1 (NOT_SERVING while the store is unreachable and while
draining) and server reflection. Metrics are on --metrics_listen.

Without --config the built-in dev pools are used: cpu, gpu-t4x2, gpu-p100
(30 h a week of GPU) and tpu-v3-8 (20 h a week), 12 h sessions (9 h TPU),
20 min idle timeout, quotas reset Saturday 00:00 UTC.`,
		Example: `  # One region with the embedded store and local processes
  meridian scheduler --region us-central1 --store sqlite:///var/lib/meridian/sessions.db

  # Regions sharing one PostgreSQL, real Jupyter as the workload
  meridian scheduler --region europe-west1 --listen 127.0.0.1:8091 \
    --store 'postgres://meridian:secret@db:5432/meridian?sslmode=require' \
    --config pools.yaml --workload_command 'jupyter lab --no-browser --port={port} --IdentityProvider.token={token}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runScheduler(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8091", "gRPC listen address (h2c; the gateway sidecar terminates TLS)")
	fl.StringVar(&f.metricsListen, "metrics_listen", "127.0.0.1:9091", "Prometheus /metrics listen address (empty: off)")
	fl.StringVar(&f.storeURL, "store", "sqlite://"+filepath.Join(os.TempDir(), "meridian", "sessions.db"), "session store: sqlite:///path/file.db or postgres://user:pass@host/db")
	fl.StringVar(&f.region, "region", "", "region this scheduler places sessions in (required), e.g. us-central1")
	fl.StringVar(&f.instance, "instance", "", "stable id of this scheduler among its region's (default: the region)")
	fl.StringVar(&f.configPath, "config", "", "pools and quotas YAML (default: built-in dev pools)")
	fl.StringSliceVar(&f.trustedPeers, "trusted_peers", scheduler.DefaultTrustedPeers, "CIDRs allowed to assert caller identity (the gateway's address)")
	fl.StringVar(&f.workloadCmd, "workload_command", "", "session command template; {port} {session} {token} {pool} {owner} {host} are replaced (default: the built-in placeholder, meridian workload)")
	fl.StringVar(&f.workloadHost, "workload_host", "127.0.0.1", "address workloads listen on and endpoints name")
	fl.StringVar(&f.workloadLogDir, "workload_log_dir", "", "directory for each session's output (<session>.log); empty: discard")
	fl.DurationVar(&f.workloadGrace, "workload_grace", 10*time.Second, "time between SIGTERM and SIGKILL when stopping a workload")
	fl.DurationVar(&f.drain, "drain", 5*time.Second, "on SIGTERM, time to serve NOT_SERVING before stopping")
	fl.DurationVar(&f.reconcile, "reconcile_interval", time.Second, "how often every session is re-examined")
	fl.StringVar(&f.logLevel, "log_level", "info", "debug, info, warn or error")
	return cmd
}

func runScheduler(ctx context.Context, f schedulerFlags) error {
	log, err := logging.New(os.Stderr, f.logLevel)
	if err != nil {
		return err
	}
	if f.region == "" {
		return fmt.Errorf("--region is required, e.g. --region us-central1")
	}
	cfg := scheduler.DevConfig()
	if f.configPath != "" {
		if cfg, err = scheduler.LoadConfig(f.configPath); err != nil {
			return err
		}
	}
	peers, err := scheduler.ParseTrustedPeers(f.trustedPeers)
	if err != nil {
		return fmt.Errorf("--trusted_peers: %w", err)
	}
	command, err := workloadCommand(f.workloadCmd)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", f.listen, err)
	}
	var mln net.Listener
	if f.metricsListen != "" {
		if mln, err = net.Listen("tcp", f.metricsListen); err != nil {
			ln.Close()
			return fmt.Errorf("--metrics_listen %s: %w", f.metricsListen, err)
		}
	}
	log.Info("opening store", "store", redactURL(f.storeURL))
	openCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	st, err := store.Open(openCtx, f.storeURL)
	cancel()
	if err != nil {
		return err
	}
	defer st.Close()

	reg := serving.NewRegistry()
	metrics := scheduler.NewMetrics(reg)
	metrics.WatchStore(st)
	rt := &runtime.Local{Command: command, Host: f.workloadHost, Grace: f.workloadGrace, LogDir: f.workloadLogDir,
		Log: log.With("component", "runtime")}
	sched, err := scheduler.New(scheduler.Options{
		Region: f.region, Instance: f.instance, Config: cfg, Store: st, Runtime: rt,
		Log: log, Metrics: metrics, ReconcileInterval: f.reconcile,
	})
	if err != nil {
		return err
	}
	rt.OnChange = func(string) { sched.Wake() }
	srv := serving.NewGRPC(log.With("component", "grpc"), []string{schedulerv1.SessionScheduler_ServiceDesc.ServiceName},
		grpc.MaxRecvMsgSize(1<<20))
	scheduler.NewServer(sched, peers).Register(srv.Server)

	g, gctx := errgroup.WithContext(ctx)
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	runDone := make(chan struct{})
	g.Go(func() error { defer close(runDone); return sched.Run(runCtx) })
	g.Go(func() error {
		scheduler.WatchStore(gctx, st, 2*time.Second, func(ok bool, err error) {
			srv.SetServing(ok)
			if ok {
				log.Info("store reachable; SERVING")
			} else {
				log.Warn("store unreachable; NOT_SERVING", "err", err)
			}
		})
		return nil
	})
	if mln != nil {
		g.Go(func() error { return serving.ServeMetrics(gctx, mln, reg) })
	}
	g.Go(func() error {
		err := srv.Serve(gctx, ln, f.drain, 30*time.Second)
		// Serving has ended: stop this instance's workloads (local
		// processes die with us anyway) and say so in their sessions.
		sctx, cancel := context.WithTimeout(context.Background(), f.workloadGrace+10*time.Second)
		defer cancel()
		stopRun()
		<-runDone // Shutdown runs after the reconciler has stopped
		sched.Shutdown(sctx)
		return err
	})
	log.Info("scheduler serving", "listen", ln.Addr().String(), "region", f.region, "store", st.Kind(),
		"pools", strings.Join(cfg.PoolNames(), ","), "metrics", f.metricsListen)
	return g.Wait()
}

func workloadCommand(tmpl string) ([]string, error) {
	if tmpl != "" {
		return strings.Fields(tmpl), nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding the meridian binary for the default workload: %w; set --workload_command", err)
	}
	return []string{self, "workload", "--port={port}", "--session={session}", "--token={token}", "--host={host}"}, nil
}

// redactURL hides a password in a store URL for logs.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	cred := u[scheme+3 : at]
	if i := strings.Index(cred, ":"); i >= 0 {
		return u[:scheme+3] + cred[:i] + ":xxxxx" + u[at:]
	}
	return u
}
