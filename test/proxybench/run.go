package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/meridian-gw/meridian/test/benchkit"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// config is one way of reaching the backend.
type config struct {
	name  string // row label
	via   string // direct, gateway, nginx, haproxy
	proto string // grpc or rest
	jwt   bool   // the gateway verifies a JWT on every call
	env   []string
	note  string
}

var configs = []config{
	{name: "direct", via: "direct", proto: "grpc", note: "client → backend, h2c, no TLS"},
	{name: "gateway-grpc-jwt", via: "gateway", proto: "grpc", jwt: true, note: "meridian gateway, native gRPC, RS256 JWT required"},
	{name: "gateway-grpc", via: "gateway", proto: "grpc", note: "meridian gateway, native gRPC, no auth (allow_unregistered_calls)"},
	{name: "gateway-rest-jwt", via: "gateway", proto: "rest", jwt: true, note: "meridian gateway, POST /v1/echo JSON transcoded, JWT required"},
	{name: "gateway-rest", via: "gateway", proto: "rest", note: "meridian gateway, REST transcoded, no auth"},
	{name: "gateway-grpc-jwt-gcoff", via: "gateway", proto: "grpc", jwt: true, env: []string{"GOGC=off", "GOMEMLIMIT=256MiB"},
		note: "as gateway-grpc-jwt, with GOGC=off GOMEMLIMIT=256MiB in the environment: what garbage collection costs"},
	{name: "nginx-grpc", via: "nginx", proto: "grpc", note: "nginx grpc_pass (ESP v1's data plane), no auth"},
	{name: "haproxy-grpc", via: "haproxy", proto: "grpc", note: "HAProxy, h2 both sides, no auth"},
}

// row is one measured window of one configuration at one concurrency.
type row struct {
	Config    string  `json:"config"`
	Conc      int     `json:"concurrency"`
	Round     int     `json:"round"`
	Calls     int     `json:"calls"`
	Rate      float64 `json:"calls_per_s"`
	P50       float64 `json:"p50_us"`
	P99       float64 `json:"p99_us"`
	ProxyCPU  float64 `json:"proxy_cpu_us_per_call"`
	BackCPU   float64 `json:"backend_cpu_us_per_call"`
	ClientCPU float64 `json:"client_cpu_us_per_call"`
	Core1     float64 `json:"server_core_busy"`
	Core0     float64 `json:"client_core_busy"`
	SysShare  float64 `json:"proxy_kernel_share"`
	CtxSw     float64 `json:"proxy_ctx_switches_per_call"`
	Other1    float64 `json:"other_load_server_core"`
	Other0    float64 `json:"other_load_client_core"`
	Before    float64 `json:"other_load_before"`
	Errors    int     `json:"errors"`
	FirstErr  string  `json:"first_error,omitempty"`
}

type runner struct {
	meridian   string
	self       string
	serverCPU  int
	clientCPU  int
	out        string
	quietWait  time.Duration // waited so far for the machine to be quiet
	fx         *fixtures
	roots      *x509.CertPool
	jwksURL    string
	svcJWT     string
	svcOpen    string
	backend    string
	backendPID int
	logf       func(format string, a ...any)

	mu    sync.Mutex
	procs map[int]*exec.Cmd
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	meridian := fs.String("meridian", "bin/meridian", "the gateway binary (make build)")
	out := fs.String("out", "", "directory for results, logs and profiles (default: a new temporary one)")
	rounds := fs.Int("rounds", 3, "rounds over all configurations (the table shows medians)")
	warm := fs.Duration("warm", 2*time.Second, "warm-up before each measured window")
	measure := fs.Duration("measure", 5*time.Second, "measured window")
	concs := fs.String("conc", "1,50", "concurrencies")
	only := fs.String("only", "", "comma-separated configuration names (default: all)")
	serverCPU := fs.Int("server_cpu", 1, "core for the backend and the proxies")
	clientCPU := fs.Int("client_cpu", 0, "core this program (the load generator) is pinned to")
	doPerf := fs.Bool("perf", true, "count syscalls per call with perf stat (skipped when perf is missing)")
	doProfile := fs.String("profile", "gateway-grpc-jwt,gateway-rest-jwt", "gateway configurations to take a CPU profile of (in-process, at the highest concurrency); empty: none")
	size := fs.Int("size", 1024, "bytes of data in each request and response message")
	gwEnv := fs.String("gateway_env", "", "space-separated KEY=VALUE settings for every gateway process, e.g. GODEBUG=adaptivestackstart=1")
	_ = fs.Parse(args)

	var cs []int
	for _, s := range strings.Split(*concs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-conc = %q: want numbers ≥ 1", *concs)
		}
		cs = append(cs, n)
	}
	var cfgs []config
	for _, c := range configs {
		if *only == "" || slices.Contains(strings.Split(*only, ","), c.name) {
			if c.via == "gateway" && *gwEnv != "" {
				c.env = append(strings.Fields(*gwEnv), c.env...)
				c.note += " (environment: " + *gwEnv + ")"
			}
			cfgs = append(cfgs, c)
		}
	}
	if *out == "" {
		d, err := os.MkdirTemp("", "proxybench-")
		if err != nil {
			return err
		}
		*out = d
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r := &runner{meridian: *meridian, self: self, serverCPU: *serverCPU, clientCPU: *clientCPU, out: *out, procs: map[int]*exec.Cmd{},
		logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "proxybench: "+f+"\n", a...) }}
	defer r.stopAll()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		r.stopAll()
		os.Exit(130)
	}()
	if err := r.setup(*size); err != nil {
		return err
	}
	r.logf("machine: %d CPUs online, load generator on %d core(s) (GOMAXPROCS %d), servers on core %d; results in %s",
		runtime.NumCPU(), runtime.NumCPU(), runtime.GOMAXPROCS(0), *serverCPU, *out)

	var rows []row
	for round := 1; round <= *rounds; round++ {
		for _, c := range cfgs {
			rows = append(rows, r.measureConfig(c, cs, round, *warm, *measure)...)
		}
	}
	var census map[string]perfCount
	if *doPerf {
		census = r.census(cfgs, slices.Max(cs))
	}
	var profs []profileResult
	for _, name := range strings.Split(*doProfile, ",") {
		i := slices.IndexFunc(cfgs, func(c config) bool { return c.name == name && c.via == "gateway" })
		if name == "" || i < 0 {
			continue
		}
		p, err := r.profile(cfgs[i], slices.Max(cs))
		if err != nil {
			r.logf("profile %s: %v", name, err)
			continue
		}
		profs = append(profs, p)
	}
	b, _ := json.MarshalIndent(rows, "", "  ")
	_ = os.WriteFile(filepath.Join(*out, "rows.json"), b, 0o644)
	report := r.report(cfgs, cs, rows, census, profs, *rounds, *warm, *measure)
	_ = os.WriteFile(filepath.Join(*out, "report.md"), []byte(report), 0o644)
	fmt.Print(report)
	return nil
}

// setup writes the fixtures and starts the JWKS server and the backend.
func (r *runner) setup(size int) error {
	fx, err := newFixtures(filepath.Join(r.out, "fixtures"), size)
	if err != nil {
		return err
	}
	r.fx = fx
	r.roots = x509.NewCertPool()
	r.roots.AppendCertsFromPEM(fx.certPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(ln, jwksHandler(&fx.signer.PublicKey)) }()
	r.jwksURL = "http://" + ln.Addr().String() + "/jwks"
	if r.svcJWT, err = fx.serviceConfig(r.jwksURL, true); err != nil {
		return err
	}
	if r.svcOpen, err = fx.serviceConfig(r.jwksURL, false); err != nil {
		return err
	}
	r.backend = freeAddr()
	cmd, err := r.start("backend", nil, r.self, "backend", "-addr", r.backend)
	if err != nil {
		return err
	}
	r.backendPID = cmd.Process.Pid
	c, err := newGRPCClient(r.backend, nil, "", fx.payload)
	if err != nil {
		return err
	}
	defer c.close()
	return waitReady(c, 10*time.Second)
}

// start runs a server pinned to the server core, its output in a log file.
// It is stopped with SIGTERM (SIGKILL after 5 s), and dies with this
// process.
func (r *runner) start(name string, env []string, prog string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(r.out, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(r.serverCPU), prog}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
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

func (r *runner) stop(cmd *exec.Cmd) {
	r.mu.Lock()
	delete(r.procs, cmd.Process.Pid)
	r.mu.Unlock()
	pids := benchkit.TreePIDs(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(cmd.Process.Pid, 0); err != nil || isZombie(cmd.Process.Pid) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func isZombie(pid int) bool {
	f := benchkit.StatFields(pid)
	return len(f) > 2 && f[2] == "Z"
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

// freeAddr picks a loopback port nobody listens on.
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
	client   client
	proxyPID int // 0 for direct
	cmd      *exec.Cmd
}

// startConfig starts the proxy a configuration needs and a client for it.
// inproc runs the gateway inside proxybench (for profiles) instead of
// bin/meridian.
func (r *runner) startConfig(c config, inproc bool, extra ...string) (*running, error) {
	addr := r.backend
	var cmd *exec.Cmd
	var err error
	if c.via != "direct" {
		addr = freeAddr()
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		switch c.via {
		case "gateway":
			svc := r.svcOpen
			if c.jwt {
				svc = r.svcJWT
			}
			if inproc {
				cmd, err = r.start(c.name+"-inproc", c.env, r.self, append([]string{"gateway", "-ssl", addr,
					"-backend", "grpc://" + r.backend, "-service_config", svc, "-descriptor", r.fx.descriptor,
					"-certs", r.fx.certDir}, extra...)...)
			} else {
				cmd, err = r.start(c.name, c.env, r.meridian, "gateway", "--listen_host=127.0.0.1",
					"--ssl_port="+port, "--status_port=0", "--backend=grpc://"+r.backend, "--service_config="+svc,
					"--descriptor="+r.fx.descriptor, "--ssl_server_cert_path="+r.fx.certDir, "--access_log=off",
					"--log_level=warn", "--drain=0s")
			}
		case "nginx":
			conf, cerr := r.fx.nginxConfig(p, r.backend)
			if cerr != nil {
				return nil, cerr
			}
			dir := filepath.Dir(conf)
			cmd, err = r.start(c.name, nil, "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
		case "haproxy":
			conf, cerr := r.fx.haproxyConfig(p, r.backend)
			if cerr != nil {
				return nil, cerr
			}
			cmd, err = r.start(c.name, nil, "haproxy", "-db", "-f", conf)
		default:
			return nil, fmt.Errorf("unknown proxy %q", c.via)
		}
		if err != nil {
			return nil, err
		}
	}
	token := ""
	if c.jwt {
		token = r.fx.token
	}
	var cl client
	switch {
	case c.proto == "rest":
		cl = newRESTClient(addr, r.roots, token, r.fx.restBody)
	case c.via == "direct":
		cl, err = newGRPCClient(addr, nil, token, r.fx.payload)
	default:
		// nginx and HAProxy check no token; send it anyway, so that every
		// proxy carries the same headers.
		cl, err = newGRPCClient(addr, r.roots, r.fx.token, r.fx.payload)
	}
	run := &running{client: cl, cmd: cmd}
	if cmd != nil {
		run.proxyPID = cmd.Process.Pid
	}
	if err == nil {
		err = waitReady(cl, 15*time.Second)
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

// measureConfig measures one configuration at each concurrency. A proxy
// that does not start, or dies, gets failed rows (and its log's first
// lines in the error), and the run goes on.
func (r *runner) measureConfig(c config, concs []int, round int, warm, measure time.Duration) []row {
	failed := func(conc int, why string) row {
		r.logf("round %d %-26s c=%-3d FAILED: %s", round, c.name, conc, why)
		return row{Config: c.name, Conc: conc, Round: round, Errors: 1, FirstErr: why}
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
	dead := false
	for _, conc := range concs {
		if dead {
			rows = append(rows, failed(conc, "proxy exited earlier"+r.logTail(c.name)))
			continue
		}
		rw := r.window(c, run, conc, warm, measure, nil)
		rw.Round = round
		if run.cmd != nil && !alive(run.cmd.Process.Pid) {
			dead = true
			rw.FirstErr = "proxy exited during the window" + r.logTail(c.name) + "; " + rw.FirstErr
		}
		r.logf("round %d %-26s c=%-3d %8.0f calls/s  p50 %6.0f µs  p99 %6.0f µs  proxy %5.1f µs/call  backend %5.1f  client %5.1f  core1 %3.0f%% (+%2.0f%% other)  core0 %3.0f%% (+%2.0f%% other)  errors %d %s",
			round, c.name, conc, rw.Rate, rw.P50, rw.P99, rw.ProxyCPU, rw.BackCPU, rw.ClientCPU, 100*rw.Core1, 100*rw.Other1, 100*rw.Core0, 100*rw.Other0, rw.Errors, rw.FirstErr)
		rows = append(rows, rw)
	}
	return rows
}

// waitQuiet waits (10 s at most per window, 2 min in all) until both
// cores are nearly idle, since other work on the machine skews every
// number; it returns the busiest core's load seen last.
func (r *runner) waitQuiet() float64 {
	const limit, total = 10 * time.Second, 2 * time.Minute
	start := time.Now()
	for {
		a := benchkit.ReadCoreTicks()
		time.Sleep(300 * time.Millisecond)
		b := benchkit.ReadCoreTicks()
		load := max(a.Busy(b, r.serverCPU), a.Busy(b, r.clientCPU))
		if load < 0.10 || time.Since(start) > limit || r.quietWait > total {
			r.quietWait += time.Since(start)
			return load
		}
	}
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil && !isZombie(pid) }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// logTail quotes the start of a server's panic or error, if it logged one.
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

// window runs one measured window and computes its row. hook, when set,
// runs at both ends of the window (after sampling at the start, before it
// at the end).
func (r *runner) window(c config, run *running, conc int, warm, measure time.Duration, hook func(end bool)) row {
	var proxyPIDs []int
	if run.proxyPID != 0 {
		proxyPIDs = benchkit.TreePIDs(run.proxyPID)
	}
	backPIDs := []int{r.backendPID}
	before := r.waitQuiet()
	var p0, p1, b0, b1 benchkit.CPUSample
	var c0, c1 int64
	var k0, k1 benchkit.CoreTicks
	res := runLoad(run.client, conc, warm, measure, func(end bool) {
		if !end {
			k0 = benchkit.ReadCoreTicks()
			p0, b0, c0 = benchkit.SamplePIDs(proxyPIDs), benchkit.SamplePIDs(backPIDs), benchkit.SelfOnCPU()
			if hook != nil {
				hook(false)
			}
			return
		}
		p1, b1, c1 = benchkit.SamplePIDs(proxyPIDs), benchkit.SamplePIDs(backPIDs), benchkit.SelfOnCPU()
		k1 = benchkit.ReadCoreTicks()
		if hook != nil {
			hook(true)
		}
	})
	p, b := p1.Sub(p0), b1.Sub(b0)
	n := float64(max(res.calls, 1))
	us := func(ns int64) float64 { return float64(ns) / 1e3 / n }
	rw := row{Config: c.name, Conc: conc, Calls: res.calls, Rate: res.rate(),
		P50: float64(res.pct(0.50).Nanoseconds()) / 1e3, P99: float64(res.pct(0.99).Nanoseconds()) / 1e3,
		ProxyCPU: us(p.OnCPU), BackCPU: us(b.OnCPU), ClientCPU: us(c1 - c0),
		Core1:  float64(p.OnCPU+b.OnCPU) / float64(res.wall.Nanoseconds()),
		Core0:  float64(c1-c0) / float64(res.wall.Nanoseconds()),
		CtxSw:  float64(p.VolSwitch+p.NvolSwitch) / n,
		Errors: res.errors, Before: before}
	// What else ran on each core: its busy time less ours (this includes
	// softirq work for our own packets, the same in every configuration).
	rw.Other1 = max(0, k0.Busy(k1, r.serverCPU)-rw.Core1)
	rw.Other0 = max(0, k0.Busy(k1, r.clientCPU)-rw.Core0)
	if t := p.UTime + p.STime; t > 0 {
		rw.SysShare = float64(p.STime) / float64(t)
	}
	if res.firstErr != nil {
		rw.FirstErr = res.firstErr.Error()
	}
	return rw
}

// perfCount is what perf stat counted per call in a census window.
type perfCount struct {
	rate                  float64
	proxySys, backSys     float64 // syscalls per call
	proxySwitch, backSwit float64 // context switches per call
}

// census counts syscalls and context switches per call of each proxy and
// of the backend with perf stat, in a window of its own (counting costs a
// little CPU per syscall, so the main windows run without it).
func (r *runner) census(cfgs []config, conc int) map[string]perfCount {
	out := map[string]perfCount{}
	if _, err := exec.LookPath("perf"); err != nil {
		r.logf("perf not found: no syscall census")
		return out
	}
	const window = 3 * time.Second
	for _, c := range cfgs {
		run, err := r.startConfig(c, false)
		if err != nil {
			r.logf("census %s: %v", c.name, err)
			continue
		}
		var proxyPIDs []int
		if run.proxyPID != 0 {
			proxyPIDs = benchkit.TreePIDs(run.proxyPID)
		}
		type res struct {
			sys, sw float64
			err     error
		}
		var pch, bch chan res
		perf := func(pids []int) chan res {
			ch := make(chan res, 1)
			var s []string
			for _, p := range pids {
				s = append(s, strconv.Itoa(p))
			}
			go func() {
				cmd := exec.Command("perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches",
					"-p", strings.Join(s, ","), "--", "sleep", strconv.Itoa(int(window.Seconds())))
				b, err := cmd.CombinedOutput()
				var rs res
				rs.err = err
				for _, line := range strings.Split(string(b), "\n") {
					f := strings.Split(line, ",")
					if len(f) < 3 {
						continue
					}
					v, perr := strconv.ParseFloat(f[0], 64)
					if perr != nil {
						continue
					}
					switch f[2] {
					case "raw_syscalls:sys_enter":
						rs.sys = v
					case "context-switches":
						rs.sw = v
					}
				}
				ch <- rs
			}()
			return ch
		}
		rw := r.window(c, run, conc, time.Second, window, func(end bool) {
			if !end {
				if len(proxyPIDs) > 0 {
					pch = perf(proxyPIDs)
				}
				bch = perf([]int{r.backendPID})
			}
		})
		n := float64(max(rw.Calls, 1))
		pc := perfCount{rate: rw.Rate}
		if pch != nil {
			p := <-pch
			pc.proxySys, pc.proxySwitch = p.sys/n, p.sw/n
		}
		b := <-bch
		pc.backSys, pc.backSwit = b.sys/n, b.sw/n
		out[c.name] = pc
		r.logf("census %-26s c=%d: proxy %.2f syscalls/call, %.2f switches/call; backend %.2f syscalls/call",
			c.name, conc, pc.proxySys, pc.proxySwitch, pc.backSys)
		r.stopConfig(run)
	}
	return out
}

// profileResult is a CPU profile of the in-process gateway under load.
type profileResult struct {
	config config
	path   string
	row    row
}

// profile runs the gateway inside proxybench (same code and options as
// bin/meridian) and takes a CPU profile of a 10 s window.
func (r *runner) profile(c config, conc int) (profileResult, error) {
	path := filepath.Join(r.out, c.name+".cpu.pprof")
	_ = os.Remove(path + ".done")
	run, err := r.startConfig(c, true, "-cpuprofile", path)
	if err != nil {
		return profileResult{}, err
	}
	defer r.stopConfig(run)
	rw := r.window(c, run, conc, 2*time.Second, 10*time.Second, func(end bool) {
		if !end {
			_ = run.cmd.Process.Signal(syscall.SIGUSR1)
		} else {
			_ = run.cmd.Process.Signal(syscall.SIGUSR2)
		}
	})
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(path + ".done"); err == nil {
			r.logf("profile %s c=%d: %.0f calls/s, proxy %.1f µs/call (in-process gateway, profiling on) → %s",
				c.name, conc, rw.Rate, rw.ProxyCPU, path)
			return profileResult{config: c, path: path, row: rw}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return profileResult{}, errors.New("the profile was not written")
}
