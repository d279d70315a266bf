package dev

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meridian-gw/meridian/deploy"
	"github.com/meridian-gw/meridian/internal/sessionid"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Options configure Run.
type Options struct {
	// StateDir holds the store, logs and dev.json. Required.
	StateDir string
	// PortBase lays out ports (see Ports). Default 8000.
	PortBase int
	// Fresh deletes the previous run's state first; otherwise it resumes.
	Fresh bool
	// Binary is the meridian executable to run. Default: this one.
	Binary string
	// Out receives progress and instructions for people.
	Out io.Writer
	// Log receives structured events.
	Log *slog.Logger
	// Ready, when set, is called with dev.json's contents once all is up.
	Ready func(*Info)
	// Workload is what every session runs: WorkloadBuiltin (the default)
	// or WorkloadJupyter.
	Workload string
	// NotebookHostSuffix, when set (e.g. ".notebooks.localhost", which
	// browsers resolve to this machine), gives notebooks the host form,
	// https://{session_id}.notebooks.localhost:PORT/: the edge's and the
	// gateways' --notebook_host_suffix, the schedulers' base, and a
	// wildcard in the dev certificate.
	NotebookHostSuffix string
}

// Supervisor starts, watches and stops the topology's processes.
type Supervisor struct {
	opts          Options
	ports         Ports
	info          *Info
	tlsDir        string
	serviceConfig string
	edge          *proc
	workloadArgs  []string // the schedulers' --workload_command, if any

	mu      sync.Mutex
	regions map[string]*regionProcs
	wg      sync.WaitGroup
}

type regionProcs struct {
	index int
	procs []*proc // the scheduler first
}

type proc struct {
	name string
	args []string
	log  string
	// stopSig ends it with the topology; default SIGTERM.
	stopSig syscall.Signal
	cmd     *exec.Cmd
	done    chan struct{}
}

// Run brings the topology up, writes dev.json, and keeps it running until
// ctx ends; then it stops every process.
func Run(ctx context.Context, opts Options) error {
	if opts.PortBase == 0 {
		opts.PortBase = 8000
	}
	// Absolute, so that every process (and dev.json's store URL) names the
	// same files whatever its working directory.
	abs, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return fmt.Errorf("--state_dir %q: %w", opts.StateDir, err)
	}
	opts.StateDir = abs
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Binary == "" {
		self, err := os.Executable()
		if err != nil {
			return err
		}
		opts.Binary = self
	}
	wargs, err := workloadArgs(opts.Workload)
	if err != nil {
		return err
	}
	if err := sessionid.CheckHostSuffix(opts.NotebookHostSuffix); err != nil {
		return fmt.Errorf("--notebook_host_suffix: %w", err)
	}
	s := &Supervisor{opts: opts, ports: Ports{Base: opts.PortBase}, regions: map[string]*regionProcs{}, workloadArgs: wargs}
	return s.run(ctx)
}

func (s *Supervisor) run(ctx context.Context) error {
	dir := s.opts.StateDir
	// Before --fresh deletes anything: never the state of a running topology.
	if info, err := ReadInfo(dir); err == nil && processAlive(info.PID) && info.PID != os.Getpid() {
		return fmt.Errorf("a topology is already running from %s (pid %d); stop it first, or use another --state_dir", dir, info.PID)
	}
	if s.opts.Fresh {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("--fresh: removing %s: %w", dir, err)
		}
	}
	// The state directory holds the store, keys and the schedulers'
	// sockets: only this account may enter it (workloads run as another
	// one when we are root; see docs/scheduler.md).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	for _, d := range []string{filepath.Join(dir, "logs"), filepath.Join(dir, "workloads")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
	}
	_ = os.Remove(InfoPath(dir))
	if err := s.checkPorts(); err != nil {
		return err
	}
	controlToken, err := newControlToken()
	if err != nil {
		return err
	}
	storeURL := "sqlite://" + filepath.Join(dir, "sessions.db")
	s.info = &Info{Control: s.ports.Control(), ControlToken: controlToken, Store: storeURL, PID: os.Getpid(), Issuer: "http://" + s.ports.Issuer(),
		Edge: s.ports.Edge(), Admin: s.ports.Admin()}
	for i, r := range Regions {
		s.info.Regions = append(s.info.Regions, RegionInfo{Name: r, Scheduler: s.ports.Scheduler(i), SchedulerSocket: SchedulerSocket(dir, r),
			SchedulerMetrics: s.ports.SchedulerMetrics(i), Gateway: s.ports.GatewaySSL(i), GatewayHTTP: s.ports.GatewayHTTP(i), GatewayStatus: s.ports.GatewayStatus(i)})
	}
	if sock := SchedulerSocket(dir, Regions[0]); len(sock) > maxSocketPath {
		return fmt.Errorf("--state_dir %s is too long for the schedulers' unix sockets (%s is %d bytes, at most %d): choose a shorter one", dir, sock, len(sock), maxSocketPath)
	}
	var names []string
	if sfx := s.opts.NotebookHostSuffix; sfx != "" {
		names = append(names, "*"+sfx)
	}
	ca, tlsDir, err := devTLS(dir, names...)
	if err != nil {
		return fmt.Errorf("dev TLS certificates: %w", err)
	}
	s.info.CA, s.tlsDir = ca, tlsDir
	issuer, err := newIssuer(dir, s.info.Issuer)
	if err != nil {
		return err
	}
	isLn, err := net.Listen("tcp", s.ports.Issuer())
	if err != nil {
		return fmt.Errorf("dev issuer %s: %w", s.ports.Issuer(), err)
	}
	isSrv := &http.Server{Handler: issuer.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = isSrv.Serve(isLn) }()
	defer isSrv.Close()
	if s.info.Token, err = issuer.Mint("alice", 24*time.Hour); err != nil {
		return err
	}
	if s.serviceConfig, err = writeServiceConfig(dir, s.info.Issuer); err != nil {
		return err
	}

	ctl, err := net.Listen("tcp", s.ports.Control())
	if err != nil {
		return fmt.Errorf("control endpoint %s: %w", s.ports.Control(), err)
	}
	ctlSrv := &http.Server{Handler: s.controlHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = ctlSrv.Serve(ctl) }()
	defer ctlSrv.Close()
	defer s.stopAll()

	fmt.Fprintf(s.opts.Out, "Starting Meridian dev topology in %s (store %s)\n", dir, storeURL)
	if os.Geteuid() != 0 {
		fmt.Fprintln(s.opts.Out, "WARNING: not running as root, so session workloads (users' code) run as you and can read this\n"+
			"  state directory and reach the schedulers' sockets; run as root to have each run as a uid of its own\n"+
			"  (docs/scheduler.md, \"Workloads and isolation\").")
	}
	for i, r := range Regions {
		if err := s.startRegion(ctx, r, i); err != nil {
			return err
		}
	}
	if err := s.startEdge(ctx); err != nil {
		return err
	}
	if err := writeInfo(dir, s.info); err != nil {
		return fmt.Errorf("writing dev.json: %w", err)
	}
	defer os.Remove(InfoPath(dir))
	s.printWelcome()
	if s.opts.Ready != nil {
		s.opts.Ready(s.info)
	}
	s.followEvents(ctx)
	fmt.Fprintln(s.opts.Out, "\nShutting down…")
	return nil
}

func (s *Supervisor) checkPorts() error {
	type want struct{ addr, what string }
	wants := []want{{s.ports.Control(), "dev control endpoint"}, {s.ports.Issuer(), "dev issuer"},
		{s.ports.Edge(), "edge"}, {s.ports.Admin(), "edge admin"}}
	for i, r := range Regions {
		wants = append(wants, want{s.ports.Scheduler(i), "scheduler " + r}, want{s.ports.SchedulerMetrics(i), "scheduler metrics " + r},
			want{s.ports.GatewaySSL(i), "gateway " + r}, want{s.ports.GatewayHTTP(i), "gateway probes " + r},
			want{s.ports.GatewayStatus(i), "gateway status " + r})
	}
	for _, w := range wants {
		ln, err := net.Listen("tcp", w.addr)
		if err != nil {
			return fmt.Errorf("port %s (%s) is in use: is another `meridian dev` running? Stop it, or pick other ports with --port_base", w.addr, w.what)
		}
		ln.Close()
	}
	return nil
}

func (s *Supervisor) regionIndex(name string) (int, bool) {
	for i, r := range Regions {
		if r == name {
			return i, true
		}
	}
	return 0, false
}

// startRegion starts a region's processes and waits until they serve.
func (s *Supervisor) startRegion(ctx context.Context, region string, i int) error {
	s.mu.Lock()
	if rp, ok := s.regions[region]; ok && rp.running() {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	dir := s.opts.StateDir
	// The gateway reaches its scheduler over a unix socket in the state
	// directory; the TCP port (probes, reflection) trusts no peer's
	// identity, so a workload on loopback cannot act as another user.
	sock := SchedulerSocket(dir, region)
	sched := s.schedulerProc(region, i)
	gw := &proc{
		name: "gateway " + region,
		args: []string{"gateway", "--listen_host", "127.0.0.1",
			"--ssl_port", port(s.ports.GatewaySSL(i)), "--http_port", port(s.ports.GatewayHTTP(i)), "--status_port", port(s.ports.GatewayStatus(i)),
			"--service", ServiceName, "--service_config", s.serviceConfig, "--rollout_strategy", "managed",
			"--backend", "unix://" + sock, "--ssl_server_cert_path", s.tlsDir,
			"--access_log", "off", "--drain", "0s", "--reflection", "authenticated", "--notebook_host_suffix", s.opts.NotebookHostSuffix},
		log: filepath.Join(dir, "logs", "gateway-"+region+".log"),
	}
	rp := &regionProcs{index: i}
	s.mu.Lock()
	s.regions[region] = rp
	s.mu.Unlock()
	start := time.Now()
	fmt.Fprintf(s.opts.Out, "  %-13s scheduler %s, gateway %s  starting…", region, s.ports.Scheduler(i), s.ports.GatewaySSL(i))
	for _, p := range []*proc{sched, gw} {
		if err := s.spawn(p); err != nil {
			return err
		}
		s.mu.Lock()
		rp.procs = append(rp.procs, p)
		s.mu.Unlock()
	}
	if err := waitServing(ctx, s.ports.Scheduler(i), sched.done, 60*time.Second); err != nil {
		fmt.Fprintln(s.opts.Out, " failed")
		return fmt.Errorf("scheduler %s did not become SERVING: %w (log: %s)", region, err, sched.log)
	}
	if err := waitHTTP(ctx, "http://"+s.ports.GatewayHTTP(i)+"/v1/health", gw.done, 60*time.Second); err != nil {
		fmt.Fprintln(s.opts.Out, " failed")
		return fmt.Errorf("gateway %s did not answer /v1/health: %w (log: %s)", region, err, gw.log)
	}
	fmt.Fprintf(s.opts.Out, " SERVING in %s\n", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// schedulerProc describes region i's scheduler. Its workloads outlive it
// (a restart-scheduler, a crash); the topology's end stops them (SIGINT).
func (s *Supervisor) schedulerProc(region string, i int) *proc {
	dir := s.opts.StateDir
	p := &proc{
		name: "scheduler " + region,
		args: []string{"scheduler", "--region", region, "--listen", s.ports.Scheduler(i), "--listen_unix", SchedulerSocket(dir, region), "--trusted_peers=",
			"--metrics_listen", s.ports.SchedulerMetrics(i), "--store", s.info.Store,
			"--drain", "0s", "--workload_grace", "3s", "--workload_log_dir", filepath.Join(dir, "workloads"),
			// A session's endpoint is its notebook's URL on the edge.
			"--notebook_url_base", s.notebookURLBase()},
		log:     filepath.Join(dir, "logs", "scheduler-"+region+".log"),
		stopSig: syscall.SIGINT,
	}
	if os.Geteuid() == 0 {
		// An account per workload, from a range of this scheduler's own:
		// schedulers on one host must not hand out the same uid.
		p.args = append(p.args, "--workload_uids", s.workloadUIDs(i))
	}
	p.args = append(p.args, s.workloadArgs...)
	return p
}

// workloadUIDs is region i's scheduler's --workload_uids: 1024 uids,
// apart from other regions' and from other topologies' (another
// --port_base) on this host.
func (s *Supervisor) workloadUIDs(i int) string {
	slot := (s.opts.PortBase*len(Regions) + i) % (1 << 14) // all within 16 Mi uids of the default's start
	first := runtime.DefaultUIDs.First + slot*1024
	return fmt.Sprintf("%d-%d", first, first+1023)
}

// notebookURLBase is the schedulers' --notebook_url_base: the edge, in
// the path form or the host form.
func (s *Supervisor) notebookURLBase() string {
	if sfx := s.opts.NotebookHostSuffix; sfx != "" {
		_, port, _ := net.SplitHostPort(s.ports.Edge())
		return "https://{session}" + sfx + ":" + port + "/"
	}
	return "https://" + s.ports.Edge()
}

// restartScheduler ends a region's scheduler with sig (SIGTERM: a
// restart; SIGKILL: a crash), starts it again and waits until it serves.
// Its sessions' workloads keep running throughout, and the new scheduler
// adopts them; the region's gateway reconnects to the new one.
func (s *Supervisor) restartScheduler(ctx context.Context, region string, i int, sig syscall.Signal) error {
	s.mu.Lock()
	rp, ok := s.regions[region]
	s.mu.Unlock()
	if !ok || len(rp.procs) == 0 || !rp.running() {
		return fmt.Errorf("region %q is not running; start it with start-region", region)
	}
	old := rp.procs[0]
	_ = old.cmd.Process.Signal(sig)
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-old.done:
	case <-t.C:
		_ = old.cmd.Process.Kill()
		<-old.done
	}
	sched := s.schedulerProc(region, i)
	if err := s.spawn(sched); err != nil {
		return err
	}
	s.mu.Lock()
	rp.procs[0] = sched
	s.mu.Unlock()
	if err := waitServing(ctx, s.ports.Scheduler(i), sched.done, 60*time.Second); err != nil {
		return fmt.Errorf("scheduler %s did not become SERVING after its restart: %w (log: %s)", region, err, sched.log)
	}
	return nil
}

// startEdge writes the edge's config — the seed's MCI, MCS and
// BackendConfig unchanged, and a Cluster per region — and starts it.
func (s *Supervisor) startEdge(ctx context.Context) error {
	dir := filepath.Join(s.opts.StateDir, "edge")
	secret := filepath.Join(dir, "session-scheduler-tls")
	if err := os.MkdirAll(secret, 0o700); err != nil {
		return err
	}
	for src, dst := range map[string]string{"server.crt": "tls.crt", "server.key": "tls.key"} {
		b, err := os.ReadFile(filepath.Join(s.tlsDir, src))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(secret, dst), b, 0o600); err != nil {
			return err
		}
	}
	var clusters strings.Builder
	clusters.WriteString("# The fleet: one cluster per region, each one gateway (written by meridian dev).\n")
	for i, r := range s.info.Regions {
		fmt.Fprintf(&clusters, "---\napiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: %s-1\nspec:\n  region: %s\n  endpoints:\n  - address: %s\n",
			r.Name, r.Name, s.ports.GatewaySSL(i))
	}
	files := map[string]string{"session-scheduler.yaml": deploy.EdgeYAML, "clusters.yaml": clusters.String()}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	e := &proc{
		name: "edge",
		args: []string{"edge", "--config", dir, "--region", Regions[0], "--listen", s.ports.Edge(), "--admin_listen", s.ports.Admin(),
			"--upstream_ca", s.info.CA, "--notebook_host_suffix", s.opts.NotebookHostSuffix},
		log: filepath.Join(s.opts.StateDir, "logs", "edge.log"),
	}
	fmt.Fprintf(s.opts.Out, "  %-13s %s (dashboard http://%s)  starting…", "edge", s.ports.Edge(), s.ports.Admin())
	start := time.Now()
	if err := s.spawn(e); err != nil {
		return err
	}
	s.mu.Lock()
	s.edge = e
	s.mu.Unlock()
	if err := waitHTTP(ctx, "http://"+s.ports.Admin()+"/healthz", e.done, 30*time.Second); err != nil {
		fmt.Fprintln(s.opts.Out, " failed")
		return fmt.Errorf("edge did not start: %w (log: %s)", err, e.log)
	}
	fmt.Fprintf(s.opts.Out, " serving in %s\n", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// followEvents prints the edge's health events as they happen — regions
// going down, draining, coming back — until ctx ends.
func (s *Supervisor) followEvents(ctx context.Context) {
	client := &http.Client{Timeout: 2 * time.Second}
	var last time.Time
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resp, err := client.Get("http://" + s.info.Admin + "/api/events")
		if err != nil {
			continue
		}
		var evs []struct {
			Time     time.Time `json:"time"`
			Kind     string    `json:"kind"`
			Region   string    `json:"region"`
			Endpoint string    `json:"endpoint"`
			Detail   string    `json:"detail"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&evs)
		resp.Body.Close()
		for _, e := range evs {
			if !e.Time.After(last) {
				continue
			}
			last = e.Time
			fmt.Fprintf(s.opts.Out, "%s  edge: %-10s %-13s %s\n", e.Time.Local().Format("15:04:05"), e.Kind, e.Region, e.Detail)
		}
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// waitHTTP polls url until it answers 200, the process exits, or timeout.
func waitHTTP(ctx context.Context, url string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// writeServiceConfig writes deploy/service.yaml's content for the dev
// issuer: the seed's config with SERVICE_NAME, SERVICE_ACCOUNT and the
// x509 jwks_uri filled in.
func writeServiceConfig(dir, issuer string) (string, error) {
	s := strings.NewReplacer("SERVICE_NAME", ServiceName, "IP_ADDRESS", "127.0.0.1",
		"https://www.googleapis.com/robot/v1/metadata/x509/SERVICE_ACCOUNT", issuer+"/x509",
		"SERVICE_ACCOUNT", issuer).Replace(ServiceConfigTemplate)
	path := filepath.Join(dir, "service.yaml")
	return path, os.WriteFile(path, []byte(s), 0o600)
}

func (rp *regionProcs) running() bool {
	for _, p := range rp.procs {
		select {
		case <-p.done:
		default:
			return true
		}
	}
	return false
}

func (s *Supervisor) spawn(p *proc) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	p.cmd = exec.Command(s.opts.Binary, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	// Dies with the supervisor, so Ctrl-C or a crash leaves nothing behind.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	p.done = make(chan struct{})
	s.opts.Log.Info("process started", "name", p.name, "pid", p.cmd.Process.Pid, "log", p.log)
	s.wg.Go(func() {
		err := p.cmd.Wait()
		f.Close()
		close(p.done)
		s.opts.Log.Info("process exited", "name", p.name, "err", fmt.Sprint(err))
	})
	return nil
}

// stopRegion kills a region's processes with SIGKILL, as a crash would.
func (s *Supervisor) stopRegion(region string) error {
	s.mu.Lock()
	rp, ok := s.regions[region]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("region %q is not running", region)
	}
	for _, p := range rp.procs {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	return nil
}

func (s *Supervisor) stopAll() {
	s.mu.Lock()
	var all []*proc
	if s.edge != nil {
		all = append(all, s.edge)
	}
	for _, rp := range s.regions {
		all = append(all, rp.procs...)
	}
	s.mu.Unlock()
	for _, p := range all {
		sig := p.stopSig
		if sig == 0 {
			sig = syscall.SIGTERM
		}
		_ = p.cmd.Process.Signal(sig)
	}
	t := time.NewTimer(15 * time.Second)
	defer t.Stop()
	for _, p := range all {
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
		}
	}
	s.wg.Wait()
}

func (s *Supervisor) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /regions/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		if err := checkControlRequest(r, s.info.ControlToken); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		name, action := r.PathValue("name"), r.PathValue("action")
		i, ok := s.regionIndex(name)
		if !ok {
			http.Error(w, fmt.Sprintf("unknown region %q; regions: %s", name, strings.Join(Regions, ", ")), http.StatusNotFound)
			return
		}
		var err error
		switch action {
		case "stop":
			err = s.stopRegion(name)
		case "start":
			err = s.startRegion(r.Context(), name, i)
		case "restart-scheduler":
			sig, ok := map[string]syscall.Signal{"": syscall.SIGTERM, "TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL}[r.URL.Query().Get("signal")]
			if !ok {
				http.Error(w, fmt.Sprintf("signal %q: want TERM (a restart) or KILL (a crash)", r.URL.Query().Get("signal")), http.StatusBadRequest)
				return
			}
			err = s.restartScheduler(r.Context(), name, i, sig)
		default:
			http.Error(w, "action must be start, stop or restart-scheduler", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "region %s: %s done\n", name, action)
	})
	return mux
}

func (s *Supervisor) printWelcome() {
	r0 := s.info.Regions[0]
	m := selfCommand()
	fmt.Fprintf(s.opts.Out, `
Meridian is up: %d regions (a scheduler and an ESP-compatible gateway each, one shared
store %s) behind the edge at %s.
  dashboard: http://%s    dev.json: %s    issuer: %s

Try it (through the edge: TLS, JWT, nearest healthy region):
  export MERIDIAN_ENDPOINT=%s MERIDIAN_CACERT=%s
  export MERIDIAN_TOKEN=$(%s dev token --user alice --state_dir %s)
  %s sessions create --pool cpu --wait
  %s sessions list
  %s quota
  %s status --state_dir %s
  curl --cacert $MERIDIAN_CACERT -H "Authorization: Bearer $MERIDIAN_TOKEN" https://%s/v1/sessions
  curl --cacert $MERIDIAN_CACERT -H "Authorization: Bearer $MERIDIAN_TOKEN" -d '{"pool":"gpu-t4x2","requestId":"r-1"}' https://%s/v1/sessions
  curl --cacert $MERIDIAN_CACERT https://%s/v1/health
  grpcurl -cacert $MERIDIAN_CACERT -H "authorization: Bearer $MERIDIAN_TOKEN" %s meridian.scheduler.v1.SessionScheduler/GetQuota

Failure drills (watch the dashboard):
  %s dev stop-region %s --state_dir %s
  %s dev start-region %s --state_dir %s
  %s dev restart-scheduler %s --signal KILL --state_dir %s   # its sessions keep running

Logs: %s
Ctrl-C stops everything.
`, len(s.info.Regions), s.info.Store, s.info.Edge, s.info.Admin, InfoPath(s.opts.StateDir), s.info.Issuer,
		s.info.Edge, s.info.CA, m, s.opts.StateDir, m, m, m, m, s.opts.StateDir, s.info.Edge, s.info.Edge, s.info.Edge, s.info.Edge,
		m, r0.Name, s.opts.StateDir, m, r0.Name, s.opts.StateDir, m, r0.Name, s.opts.StateDir, filepath.Join(s.opts.StateDir, "logs"))
}

// selfCommand is how to run this binary from the directory it was started
// in, for commands to paste: its name when the shell found it on $PATH,
// else its path (relative when it lies below, as bin/meridian does).
func selfCommand() string {
	if !strings.Contains(os.Args[0], "/") {
		return os.Args[0]
	}
	self, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, self); err == nil && !strings.HasPrefix(rel, "..") {
			if !strings.Contains(rel, "/") {
				rel = "./" + rel
			}
			return rel
		}
	}
	return self
}

// waitServing polls grpc health until SERVING, the process exits, or timeout.
func waitServing(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Retry connecting quickly: the process is starting, not failing.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second}))
	if err != nil {
		return err
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(cctx, &healthpb.HealthCheckRequest{})
		ccancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-exited:
			return errors.New("the process exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// Control asks a running topology's supervisor to start or stop a region.
func Control(ctx context.Context, stateDir, region, action string) (string, error) {
	return control(ctx, stateDir, "/regions/"+url.PathEscape(region)+"/"+url.PathEscape(action))
}

// RestartScheduler asks a running topology's supervisor to restart a
// region's scheduler, ending it with signal "TERM" (a restart) or "KILL"
// (a crash). Its sessions' workloads keep running and are adopted.
func RestartScheduler(ctx context.Context, stateDir, region, signal string) (string, error) {
	return control(ctx, stateDir, "/regions/"+url.PathEscape(region)+"/restart-scheduler?signal="+url.QueryEscape(signal))
}

func control(ctx context.Context, stateDir, path string) (string, error) {
	info, err := ReadInfo(stateDir)
	if err != nil {
		return "", err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+info.Control+path, nil)
	req.Header.Set("Authorization", "Bearer "+info.ControlToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("reaching the dev supervisor at %s: %w", info.Control, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s", strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}
