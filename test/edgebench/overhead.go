package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meridian-gw/meridian/test/benchkit"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is one way of reaching the backend.
type config struct {
	name string // row label: direct, edge, edge-<variant>, haproxy, edge-inproc
	note string
	bin  string   // edge variants: another meridian binary
	env  []string // edge variants: extra environment
}

var configs = []config{
	{name: "direct", note: "client → backend, TLS h2"},
	{name: "edge", note: "client → `meridian edge` → backend, TLS h2 on both sides (seed MCI/MCS/BackendConfig, HTTPS health checks every 1 s)"},
	{name: "floor", note: "client → a minimal grpc-go pass-through on the edge's stack (h2mux TLS front, one TLS client connection, no routing/health/retries/metrics; `edgebench floor`) → backend"},
	{name: "haproxy", note: "client → HAProxy (nbthread 1, `ssl alpn h2` both sides, CA verified) → backend"},
}

// row is one measured window of one configuration at one concurrency.
type row struct {
	Config    string  `json:"config"`
	Conc      int     `json:"concurrency"`
	Round     int     `json:"round"`
	Size      int     `json:"payload_bytes"`
	Calls     int     `json:"calls"`
	Rate      float64 `json:"calls_per_s"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	ProxyCPU  float64 `json:"proxy_cpu_us_per_call"`
	BackCPU   float64 `json:"backend_cpu_us_per_call"`
	ClientCPU float64 `json:"client_cpu_us_per_call"`
	SysShare  float64 `json:"proxy_kernel_share"`
	CtxSw     float64 `json:"proxy_ctx_switches_per_call"`
	RSS       float64 `json:"proxy_peak_rss_mib"`
	Core1     float64 `json:"server_core_busy"`
	Other1    float64 `json:"other_load_server_core"`
	Other0    float64 `json:"other_load_client_core"`
	Errors    int     `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
}

type runner struct {
	meridian   string
	edgeEnv    []string // extra environment for the edge process only
	self       string
	serverCPU  int
	clientCPU  int
	out        string
	fx         *fixtures
	roots      *x509.CertPool
	backend    string
	backendPID int
	quietWait  time.Duration
	logf       func(format string, a ...any)

	mu    sync.Mutex
	procs map[int]*exec.Cmd
}

func newRunner(meridian, out string, serverCPU, clientCPU int) (*runner, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if out == "" {
		if out, err = os.MkdirTemp("", "edgebench-"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	return &runner{meridian: meridian, self: self, serverCPU: serverCPU, clientCPU: clientCPU, out: out, procs: map[int]*exec.Cmd{},
		logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "edgebench: "+f+"\n", a...) }}, nil
}

// overhead is `edgebench run`'s first part: every configuration at every
// concurrency, rounds times, interleaved.
type overheadOpts struct {
	only           []string // configuration names; empty: all
	variants       []config // more edges, measured between edge and haproxy
	rounds         int
	warm, measure  time.Duration
	concs          []int
	size           int
	profile        bool
	profileMeasure time.Duration
}

type overheadResult struct {
	opts     overheadOpts
	size     int    // payload bytes actually measured
	sizeNote string // why it differs from opts.size, if it does
	rows     []row
	prof     *profileResult
	edgeEnv  []string
	configs  []config // measured, in order
}

func (r *runner) overhead(o overheadOpts) (*overheadResult, error) {
	res := &overheadResult{opts: o, size: o.size, edgeEnv: r.edgeEnv}
	res.configs = append(append(slices.Clone(configs[:2]), o.variants...), configs[2:]...) // direct, edge, variants, floor, haproxy
	if len(o.only) > 0 {
		res.configs = slices.DeleteFunc(res.configs, func(c config) bool { return !slices.Contains(o.only, c.name) })
	}
	if err := r.setup(o.size); err != nil {
		return nil, err
	}
	// A pass-through proxy must survive responses larger than grpc-go's
	// buffer-pooling threshold (1 KiB); if the edge does not, say so and
	// measure below it, so that the comparison still runs.
	if o.size > 1000 && (len(o.only) == 0 || slices.Contains(o.only, "edge")) {
		if err := r.probeEdge(); err != nil {
			res.sizeNote = fmt.Sprintf("at %d bytes the edge failed: %s. Every configuration was measured at 1000 bytes instead (below grpc-go's 1 KiB buffer-pooling threshold)", o.size, err)
			r.logf("%s", res.sizeNote)
			res.size = 1000
			r.stopAll()
			if err := r.setup(res.size); err != nil {
				return nil, err
			}
		}
	}
	for round := 1; round <= o.rounds; round++ {
		for _, c := range res.configs {
			res.rows = append(res.rows, r.measureConfig(c, o.concs, round, o.warm, o.measure, res.size)...)
		}
	}
	if o.profile {
		p, err := r.profile(slices.Max(o.concs), o.profileMeasure, res.size)
		if err != nil {
			r.logf("profile: %v", err)
		} else {
			res.prof = p
		}
	}
	b, _ := json.MarshalIndent(res.rows, "", "  ")
	_ = os.WriteFile(filepath.Join(r.out, "rows.json"), b, 0o644)
	return res, nil
}

// setup writes the fixtures and starts the backend on the server core.
func (r *runner) setup(size int) error {
	fx, err := newFixtures(filepath.Join(r.out, fmt.Sprintf("fixtures-%d", size)), size)
	if err != nil {
		return err
	}
	r.fx = fx
	r.roots = x509.NewCertPool()
	r.roots.AppendCertsFromPEM(fx.caPEM)
	r.backend = freeAddr()
	cmd, err := r.start("backend", r.self, "backend", "-addr", r.backend, "-certs", fx.certDir)
	if err != nil {
		return err
	}
	r.backendPID = cmd.Process.Pid
	c, err := newEchoClient(r.backend, r.roots, fx.payload)
	if err != nil {
		return err
	}
	defer c.close()
	return c.waitReady(10 * time.Second)
}

// probeEdge drives the edge for two seconds at concurrency 50 and reports
// whether it kept answering.
func (r *runner) probeEdge() error {
	run, err := r.startConfig(config{name: "edge-probe"}, false)
	if err != nil {
		return errors.New(oneLine(err.Error()) + r.logTail("edge-probe"))
	}
	defer r.stopConfig(run)
	res := runLoad(run.client.call, 50, 500*time.Millisecond, 2*time.Second, func(bool) {})
	if !alive(run.cmd.Process.Pid) {
		return errors.New("the edge process died" + r.logTail("edge-probe"))
	}
	if res.errors > 0 {
		return fmt.Errorf("%d of %d calls failed (%v)%s", res.errors, res.errors+res.calls, res.firstErr, r.logTail("edge-probe"))
	}
	return nil
}

// start runs a server pinned to the server core, its output in a log
// file; it dies with this process.
func (r *runner) start(name, prog string, args ...string) (*exec.Cmd, error) {
	return r.startEnv(name, nil, prog, args...)
}

func (r *runner) startEnv(name string, env []string, prog string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(r.out, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(r.serverCPU), prog}, args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	r.mu.Lock()
	r.procs[cmd.Process.Pid] = cmd
	r.mu.Unlock()
	go func() { _ = cmd.Wait(); log.Close() }()
	return cmd, nil
}

// stop ends a process this program started: SIGTERM, then SIGKILL after 5 s.
func (r *runner) stop(cmd *exec.Cmd) {
	r.mu.Lock()
	delete(r.procs, cmd.Process.Pid)
	r.mu.Unlock()
	pids := benchkit.TreePIDs(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && alive(cmd.Process.Pid) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pids {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func (r *runner) stopAll() {
	r.mu.Lock()
	var cmds []*exec.Cmd
	for _, c := range r.procs {
		cmds = append(cmds, c)
	}
	r.mu.Unlock()
	for _, c := range cmds {
		r.stop(c)
	}
}

func alive(pid int) bool {
	f := benchkit.StatFields(pid)
	return len(f) > 2 && f[2] != "Z" && f[2] != "X"
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// running is a configuration ready to take calls.
type running struct {
	client   *echoClient
	proxyPID int // 0 for direct
	cmd      *exec.Cmd
}

// startConfig starts what a configuration needs and a client for it.
// inproc runs the edge inside edgebench (for a CPU profile) instead of
// bin/meridian.
func (r *runner) startConfig(c config, inproc bool, extra ...string) (*running, error) {
	addr := r.backend
	var cmd *exec.Cmd
	var err error
	if c.name != "direct" {
		addr = freeAddr()
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		switch {
		case strings.HasPrefix(c.name, "edge"):
			dir, cerr := r.fx.edgeConfig("edge-config", r.backend)
			if cerr != nil {
				return nil, cerr
			}
			bin, env := r.meridian, r.edgeEnv
			if c.bin != "" {
				bin, env = c.bin, c.env
			}
			if inproc {
				cmd, err = r.startEnv(c.name, r.edgeEnv, r.self, append([]string{"edge", "-config", dir, "-listen", addr,
					"-certs", r.fx.certDir, "-ca", r.fx.caPath}, extra...)...)
			} else {
				cmd, err = r.startEnv(c.name, env, bin, "edge", "--config", dir, "--region", "us-central1", "--listen", addr,
					"--admin_listen", freeAddr(), "--cert_dir", r.fx.certDir, "--upstream_ca", r.fx.caPath, "--log_level", "warn")
			}
		case c.name == "floor":
			cmd, err = r.start(c.name, r.self, "floor", "-listen", addr, "-backend", r.backend, "-certs", r.fx.certDir, "-ca", r.fx.caPath)
		case c.name == "haproxy":
			conf, cerr := r.fx.haproxyConfig(p, r.backend)
			if cerr != nil {
				return nil, cerr
			}
			cmd, err = r.start(c.name, "haproxy", "-db", "-f", conf)
		default:
			return nil, fmt.Errorf("unknown configuration %q", c.name)
		}
		if err != nil {
			return nil, err
		}
	}
	cl, err := newEchoClient(addr, r.roots, r.fx.payload)
	run := &running{client: cl, cmd: cmd}
	if cmd != nil {
		run.proxyPID = cmd.Process.Pid
	}
	if err == nil {
		err = cl.waitReady(15 * time.Second)
	}
	if err != nil {
		r.stopConfig(run)
		return nil, err
	}
	return run, nil
}

func (r *runner) stopConfig(run *running) {
	if run.client != nil {
		run.client.close()
	}
	if run.cmd != nil {
		r.stop(run.cmd)
	}
}

// measureConfig measures one configuration at each concurrency; a proxy
// that does not start or dies gets failed rows and the run goes on.
func (r *runner) measureConfig(c config, concs []int, round int, warm, measure time.Duration, size int) []row {
	failed := func(conc int, why string) row {
		r.logf("round %d %-8s c=%-3d FAILED: %s", round, c.name, conc, why)
		return row{Config: c.name, Conc: conc, Round: round, Size: size, Errors: 1, FirstErr: why}
	}
	run, err := r.startConfig(c, false)
	if err != nil {
		var rows []row
		for _, conc := range concs {
			rows = append(rows, failed(conc, "did not start: "+oneLine(err.Error())+r.logTail(c.name)))
		}
		return rows
	}
	defer r.stopConfig(run)
	var rows []row
	for _, conc := range concs {
		if run.cmd != nil && !alive(run.cmd.Process.Pid) {
			rows = append(rows, failed(conc, "proxy exited earlier"+r.logTail(c.name)))
			continue
		}
		rw := r.window(c, run, conc, warm, measure, nil)
		rw.Round, rw.Size = round, size
		if run.cmd != nil && !alive(run.cmd.Process.Pid) {
			rw.FirstErr = "proxy exited during the window" + r.logTail(c.name) + "; " + rw.FirstErr
		}
		r.logf("round %d %-8s c=%-3d %7.0f calls/s  p50 %6.0f µs  p99 %6.0f µs  proxy %5.1f µs/call  backend %5.1f  client %5.1f  core1 %3.0f%% (+%2.0f%% other)  errors %d %s",
			round, c.name, conc, rw.Rate, rw.P50, rw.P99, rw.ProxyCPU, rw.BackCPU, rw.ClientCPU, 100*rw.Core1, 100*rw.Other1, rw.Errors, rw.FirstErr)
		rows = append(rows, rw)
	}
	return rows
}

// waitQuiet waits (10 s at most per window, 2 min in all) until both
// cores are nearly idle: other work on the machine skews every number.
func (r *runner) waitQuiet() {
	const limit, total = 10 * time.Second, 2 * time.Minute
	start := time.Now()
	for {
		a := benchkit.ReadCoreTicks()
		time.Sleep(300 * time.Millisecond)
		b := benchkit.ReadCoreTicks()
		load := max(a.Busy(b, r.serverCPU), a.Busy(b, r.clientCPU))
		if load < 0.10 || time.Since(start) > limit || r.quietWait > total {
			r.quietWait += time.Since(start)
			return
		}
	}
}

// window runs one measured window; hook runs at both ends of it.
func (r *runner) window(c config, run *running, conc int, warm, measure time.Duration, hook func(end bool)) row {
	var proxyPIDs []int
	if run.proxyPID != 0 {
		proxyPIDs = benchkit.TreePIDs(run.proxyPID)
	}
	backPIDs := []int{r.backendPID}
	r.waitQuiet()
	var p0, p1, b0, b1 benchkit.CPUSample
	var c0, c1 int64
	var k0, k1 benchkit.CoreTicks
	res := runLoad(run.client.call, conc, warm, measure, func(end bool) {
		if !end {
			k0 = benchkit.ReadCoreTicks()
			p0, b0, c0 = benchkit.SamplePIDs(proxyPIDs), benchkit.SamplePIDs(backPIDs), benchkit.SelfOnCPU()
			if hook != nil {
				hook(false)
			}
			return
		}
		if hook != nil {
			hook(true)
		}
		p1, b1, c1 = benchkit.SamplePIDs(proxyPIDs), benchkit.SamplePIDs(backPIDs), benchkit.SelfOnCPU()
		k1 = benchkit.ReadCoreTicks()
	})
	p, b := p1.Sub(p0), b1.Sub(b0)
	n := float64(max(res.calls, 1))
	us := func(ns int64) float64 { return float64(ns) / 1e3 / n }
	rw := row{Config: c.name, Conc: conc, Calls: res.calls, Rate: res.rate(),
		P50: float64(res.pct(0.50).Nanoseconds()) / 1e3, P99: float64(res.pct(0.99).Nanoseconds()) / 1e3,
		ProxyCPU: us(p.OnCPU), BackCPU: us(b.OnCPU), ClientCPU: us(c1 - c0),
		Core1: float64(p.OnCPU+b.OnCPU) / float64(res.wall.Nanoseconds()),
		CtxSw: float64(p.Switches()) / n, RSS: benchkit.PeakRSS(proxyPIDs), Errors: res.errors}
	client := float64(c1-c0) / float64(res.wall.Nanoseconds())
	// What else ran on each core: its busy time less ours (this includes
	// softirq work for our own packets, the same in every configuration).
	rw.Other1 = max(0, k0.Busy(k1, r.serverCPU)-rw.Core1)
	rw.Other0 = max(0, k0.Busy(k1, r.clientCPU)-client)
	if t := p.UTime + p.STime; t > 0 {
		rw.SysShare = float64(p.STime) / float64(t)
	}
	if res.firstErr != nil {
		rw.FirstErr = oneLine(res.firstErr.Error())
	}
	return rw
}

// profileResult is a CPU profile of the in-process edge under load.
type profileResult struct {
	path, exe string
	row       row
}

// profile runs the edge inside edgebench (edge.New with the options
// `meridian edge` builds) and profiles one window.
func (r *runner) profile(conc int, measure time.Duration, size int) (*profileResult, error) {
	path := filepath.Join(r.out, "edge.cpu.pprof")
	_ = os.Remove(path + ".done")
	c := config{name: "edge-inproc"}
	run, err := r.startConfig(c, true, "-cpuprofile", path)
	if err != nil {
		return nil, err
	}
	defer r.stopConfig(run)
	rw := r.window(c, run, conc, 2*time.Second, measure, func(end bool) {
		if !end {
			_ = run.cmd.Process.Signal(syscall.SIGUSR1)
		} else {
			_ = run.cmd.Process.Signal(syscall.SIGUSR2)
		}
	})
	rw.Size = size
	for range 100 {
		if _, err := os.Stat(path + ".done"); err == nil {
			r.logf("profile edge c=%d: %.0f calls/s, edge %.1f µs/call (in-process, profiling on) → %s", conc, rw.Rate, rw.ProxyCPU, path)
			return &profileResult{path: path, exe: r.self, row: rw}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, errors.New("the profile was not written" + r.logTail("edge-inproc"))
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// logTail quotes a server's panic, or its last log line.
func (r *runner) logTail(name string) string {
	b, err := os.ReadFile(filepath.Join(r.out, name+".log"))
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			out := l
			for _, m := range lines[i+1:] {
				if strings.Contains(m, "meridian-gw/meridian/") {
					out += " at " + strings.TrimSpace(m)
					break
				}
			}
			return " (" + out + ")"
		}
	}
	return " (log: " + oneLine(lines[len(lines)-1]) + ")"
}

func haproxyVersion() string {
	b, err := exec.Command("haproxy", "-v").Output()
	if err != nil {
		return "not installed"
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "HAProxy version "))
}

// parseVariants reads -variants: space-separated NAME=BINARY[@KEY=VALUE...]
// entries, each an edge measured as configuration edge-NAME.
func parseVariants(s string) ([]config, error) {
	var out []config
	for _, f := range strings.Fields(s) {
		name, rest, ok := strings.Cut(f, "=")
		if !ok || name == "" || rest == "" {
			return nil, fmt.Errorf("-variants entry %q: want NAME=BINARY[@KEY=VALUE...]", f)
		}
		parts := strings.Split(rest, "@")
		bin, err := filepath.Abs(parts[0])
		if err != nil {
			return nil, err
		}
		out = append(out, config{name: "edge-" + name, bin: bin, env: parts[1:],
			note: fmt.Sprintf("as edge, with %s %s", parts[0], strings.Join(parts[1:], " "))})
	}
	return out, nil
}

func parseConcs(s string) ([]int, error) {
	var cs []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-conc = %q: want numbers ≥ 1", s)
		}
		cs = append(cs, n)
	}
	return cs, nil
}
