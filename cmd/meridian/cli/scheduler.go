package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/internal/logging"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/spf13/cobra"
)

type schedulerFlags struct {
	listen, listenUnix, metricsListen, storeURL, region, instance, configPath string
	trustedPeers                                                              []string
	workloadCmd, workloadUser, workloadDir                                    string
	workloadEnv                                                               []string
	workloadUserSet, workloadUIDsSet                                          bool
	workloadUIDs                                                              string
	workloadHost, workloadLogDir                                              string
	workloadGrace, drain, reconcile                                           time.Duration
	logLevel                                                                  string
	kube                                                                      kubeFlags
	notebookURLBase                                                           string
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
forwards; it is trusted from peers of --listen_unix (a socket only this
account can reach) and, on --listen, from --trusted_peers (loopback by
default). Workloads run on this machine too: give the gateway the unix
socket and set --trusted_peers '' so that a notebook on loopback cannot act
as another user.

Workloads (the local runtime) run users' code: as root, the scheduler runs
each as a uid of its own (--workload_uids; or all as one --workload_user)
in a private directory under --workload_dir, with a minimal environment;
the session token is in $JUPYTER_TOKEN and $MERIDIAN_WORKLOAD_TOKEN, never
on the command line. No workload can read another's files or token, and
whatever one leaves running is killed when it ends. Not as root, workloads
run as this account and can read what it can: it says so at start.

Workloads outlive the scheduler: on SIGTERM (a restart, a deploy) or a crash
they keep running, and the next scheduler of this --instance adopts them
from the store (same process: PID and start time), so their sessions stay
RUNNING; one that ended meanwhile is marked CRASHED. On SIGINT (Ctrl-C) the
scheduler stops its workloads and ends their sessions (STOPPED, ADMIN).
Under systemd, set KillMode=process so that a restart does not kill them.

Serves grpc.health.v1 (NOT_SERVING while the store is unreachable and while
draining) and server reflection. Metrics are on --metrics_listen.

Without --config the built-in dev pools are used: cpu, gpu-t4x2, gpu-p100
(30 h a week of GPU) and tpu-v3-8 (20 h a week), 12 h sessions (9 h TPU),
20 min idle timeout, quotas reset Saturday 00:00 UTC.`,
		Example: `  # One region with the embedded store and local processes; the gateway
  # reaches it over the socket (--backend unix:///run/meridian/scheduler.sock)
  sudo meridian scheduler --region us-central1 --store sqlite:///var/lib/meridian/sessions.db \
    --listen_unix /run/meridian/scheduler.sock --trusted_peers ''

  # Regions sharing one PostgreSQL (the password in the environment, not
  # on the command line), real Jupyter as the workload (it reads the
  # session token from $JUPYTER_TOKEN)
  export MERIDIAN_STORE='postgres://meridian:secret@db:5432/meridian?sslmode=require'
  meridian scheduler --region europe-west1 --listen 127.0.0.1:8091 \
    --config pools.yaml --workload_command 'jupyter lab --no-browser --ip=127.0.0.1 --port={port}'

  # Sessions as Pods (pools need their kubernetes settings; in a Pod, its
  # service account is used: docs/kubernetes.md has the RBAC)
  meridian scheduler --region us-central1 --runtime=kubernetes --namespace meridian-sessions \
    --config pools.yaml --kubeconfig ~/.kube/config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.workloadUserSet = cmd.Flags().Changed("workload_user")
			f.workloadUIDsSet = cmd.Flags().Changed("workload_uids")
			return runScheduler(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8091", "gRPC listen address (h2c; the gateway sidecar terminates TLS); empty: none, with --listen_unix")
	fl.StringVar(&f.listenUnix, "listen_unix", "", "also serve on this unix socket, whose peers may assert identities; its directory is created 0700 and must let no others in (the gateway's --backend unix:///PATH)")
	fl.StringVar(&f.metricsListen, "metrics_listen", "127.0.0.1:9091", "Prometheus /metrics listen address (empty: off)")
	fl.StringVar(&f.storeURL, "store", envOr("MERIDIAN_STORE", "sqlite://"+filepath.Join(os.TempDir(), "meridian", "sessions.db")),
		"session store: sqlite:///path/file.db or postgres://user:pass@host/db ($MERIDIAN_STORE: keeps a password off the command line)")
	fl.StringVar(&f.region, "region", "", "region this scheduler places sessions in (required), e.g. us-central1")
	fl.StringVar(&f.instance, "instance", "", "stable id of this scheduler among its region's (default: the region)")
	fl.StringVar(&f.configPath, "config", "", "pools and quotas YAML (default: built-in dev pools)")
	fl.StringSliceVar(&f.trustedPeers, "trusted_peers", scheduler.DefaultTrustedPeers, "CIDRs whose TCP peers may assert caller identity (the gateway's address); '' trusts none (use --listen_unix)")
	fl.StringVar(&f.workloadCmd, "workload_command", "", "session command template; {port} {session} {pool} {owner} {host} {base_url} are replaced, the token is in $JUPYTER_TOKEN and $MERIDIAN_WORKLOAD_TOKEN (default: the built-in placeholder, meridian workload)")
	fl.StringVar(&f.workloadUser, "workload_user", "nobody", "one account every workload runs as, name or uid, instead of --workload_uids (takes root; not as root, workloads run as this account)")
	fl.StringVar(&f.workloadUIDs, "workload_uids", runtime.DefaultUIDs.String(), "as root, each workload runs as a uid of its own from this range, FIRST-LAST, so that none can read another's files or token; no account of this host may be in it, and schedulers sharing a host need ranges of their own (--workload_user instead: one account for all)")
	fl.StringVar(&f.workloadDir, "workload_dir", "", "where each session's private working directory and HOME is made, and removed when it ends (default $TMPDIR/meridian-workloads-UID)")
	fl.StringArrayVar(&f.workloadEnv, "workload_env", nil, "KEY=VALUE added to every workload's environment, which is otherwise minimal (repeatable)")
	fl.StringVar(&f.workloadHost, "workload_host", "127.0.0.1", "address workloads listen on and endpoints name")
	fl.StringVar(&f.workloadLogDir, "workload_log_dir", "", "directory for each session's output (<session>.log); empty: output.log in the session's own directory")
	fl.DurationVar(&f.workloadGrace, "workload_grace", 10*time.Second, "time between SIGTERM and SIGKILL when stopping a workload")
	fl.DurationVar(&f.drain, "drain", 5*time.Second, "on SIGTERM or SIGINT, time to serve NOT_SERVING before stopping")
	fl.DurationVar(&f.reconcile, "reconcile_interval", time.Second, "how often every session is re-examined")
	fl.StringVar(&f.notebookURLBase, "notebook_url_base", "", "the edge's public address, e.g. https://notebooks.example.com: a RUNNING session's endpoint is BASE/notebooks/{session}/ (empty: that path alone); or the host form, https://{session}.notebooks.example.com/, where workloads serve at {base_url} /")
	fl.StringVar(&f.logLevel, "log_level", "info", "debug, info, warn or error")
	addKubeFlags(fl, &f.kube)
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
	if err := undumpable(); err != nil {
		return err
	}
	rt, wake, stopRuntime, err := schedulerRuntime(ctx, f, cfg, log.With("component", "runtime"))
	if err != nil {
		return err
	}
	defer stopRuntime()
	if f.kube.runtime == "local" {
		warnUntrustworthy(log, f, peers)
	}
	lns, err := schedulerListeners(f)
	if err != nil {
		return err
	}
	var mln net.Listener
	if f.metricsListen != "" {
		if mln, err = net.Listen("tcp", f.metricsListen); err != nil {
			closeAll(lns)
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
	sched, err := scheduler.New(scheduler.Options{
		Region: f.region, Instance: f.instance, Config: cfg, Store: st, Runtime: rt,
		Log: log, Metrics: metrics, ReconcileInterval: f.reconcile, NotebookURLBase: f.notebookURLBase,
	})
	if err != nil {
		return err
	}
	wake(func(string) { sched.Wake() })
	// SIGTERM (a restart, a deploy) leaves the workloads running for the
	// next scheduler to adopt; SIGINT (Ctrl-C) stops them too.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt)
	defer signal.Stop(interrupted)
	stopWorkloads := func() bool {
		select {
		case <-interrupted:
			return true
		default:
			return false
		}
	}
	log.Info("scheduler serving", "listen", listenAddr(lns, "tcp"), "listen_unix", listenAddr(lns, "unix"), "region", f.region, "store", st.Kind(),
		"pools", strings.Join(cfg.PoolNames(), ","), "metrics", f.metricsListen)
	return sched.Serve(ctx, scheduler.ServeOptions{Listeners: lns, Peers: peers, MetricsListener: mln, Registry: reg,
		Drain: f.drain, ShutdownTimeout: f.workloadGrace + 10*time.Second, StopWorkloads: stopWorkloads})
}

// schedulerListeners opens --listen (TCP) and --listen_unix.
func schedulerListeners(f schedulerFlags) ([]net.Listener, error) {
	if f.listen == "" && f.listenUnix == "" {
		return nil, errors.New("--listen and --listen_unix are both empty: give at least one")
	}
	var lns []net.Listener
	if f.listen != "" {
		ln, err := net.Listen("tcp", f.listen)
		if err != nil {
			return nil, fmt.Errorf("--listen %s: %w", f.listen, err)
		}
		lns = append(lns, ln)
	}
	if f.listenUnix != "" {
		ln, err := scheduler.ListenUnix(f.listenUnix)
		if err != nil {
			closeAll(lns)
			return nil, fmt.Errorf("--listen_unix: %w", err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

// listenAddr is the address of the first listener on network, or "".
func listenAddr(lns []net.Listener, network string) string {
	for _, ln := range lns {
		if ln.Addr().Network() == network {
			return ln.Addr().String()
		}
	}
	return ""
}

// localRuntime builds the local runtime from the flags and checks it, so
// that a mistake is an error at start rather than in every session.
func localRuntime(f schedulerFlags, log *slog.Logger) (*runtime.Local, error) {
	rt := &runtime.Local{User: f.workloadUser, WorkDir: f.workloadDir, Env: f.workloadEnv,
		Host: f.workloadHost, Grace: f.workloadGrace, LogDir: f.workloadLogDir, Log: log}
	switch {
	case f.workloadUserSet && f.workloadUIDsSet:
		return nil, fmt.Errorf("--workload_user %s and --workload_uids %s: choose one (an account shared by every workload, or one each)", f.workloadUser, f.workloadUIDs)
	case f.workloadUserSet && strings.TrimSpace(f.workloadUser) == "" && os.Geteuid() == 0:
		return nil, errors.New("--workload_user: empty, which as root would run users' code as root; name an unprivileged account, or leave it out for a uid per workload (--workload_uids)")
	case f.workloadUserSet:
	case f.workloadUIDsSet || os.Geteuid() == 0:
		// As root, by default, an account each: a shared one lets any
		// notebook read the others' tokens.
		uids, err := runtime.ParseUIDRange(f.workloadUIDs)
		if err == nil && uids == (runtime.UIDRange{}) {
			err = errors.New("empty; want FIRST-LAST (or --workload_user, one account for every workload)") // never root's own
		}
		if err != nil {
			return nil, fmt.Errorf("--workload_uids: %w", err)
		}
		rt.UIDs, rt.User = uids, ""
	}
	if f.workloadCmd != "" {
		rt.Command = strings.Fields(f.workloadCmd)
	} else {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the meridian binary for the default workload: %w; set --workload_command", err)
		}
		rt.Command = []string{self, "workload", "--port={port}", "--session={session}", "--host={host}", "--base_url={base_url}"}
		rt.ExecByDescriptor = true
	}
	for _, kv := range f.workloadEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("--workload_env %q: want KEY=VALUE", kv)
		}
	}
	if os.Geteuid() != 0 && !f.workloadUserSet {
		// The default cannot apply: say what that means, loudly. (Asked
		// for explicitly, another account is an error from Prepare.)
		rt.User = ""
		log.Warn("not running as root: workloads run as this scheduler's own account, so users' notebooks can read "+
			"what it can (the store, its keys, other sessions' tokens and files) and reach --listen_unix",
			"uid", os.Geteuid(), "fix", "run the scheduler as root (each workload then runs as a uid of its own, --workload_uids), or one scheduler per user; see docs/scheduler.md")
	}
	if err := rt.Prepare(); err != nil {
		if errors.Is(err, runtime.ErrTokenInCommand) {
			return nil, fmt.Errorf("--workload_command %q: %w", f.workloadCmd, err)
		}
		return nil, fmt.Errorf("--workload_command/--workload_user/--workload_uids/--workload_dir: %w", err)
	}
	return rt, nil
}

// warnUntrustworthy says when a workload could call this scheduler as
// any user: when --trusted_peers covers an address of this machine, from
// which every local process, notebooks included, can connect.
func warnUntrustworthy(log *slog.Logger, f schedulerFlags, peers *scheduler.TrustedPeers) {
	if f.listen == "" {
		return
	}
	local := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				local = append(local, n.IP)
			}
		}
	}
	for _, ip := range local {
		if peers.Trusts(&net.TCPAddr{IP: ip}) {
			log.Warn("--trusted_peers covers "+ip.String()+", an address of this machine: a workload (a user's notebook) can connect from it and act as any user",
				"fix", "serve the gateway on --listen_unix (gateway --backend unix:///PATH) and set --trusted_peers ''; keep loopback trust only where workloads run elsewhere (Kubernetes)")
			return
		}
	}
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
