package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
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
	Config string `json:"config"`
	Conc   int    `json:"concurrency"`
	Round  int    `json:"round"`
	benchkit.CallStats
	Core1    float64 `json:"server_core_busy"`
	Core0    float64 `json:"client_core_busy"`
	SysShare float64 `json:"proxy_kernel_share"`
	CtxSw    float64 `json:"proxy_ctx_switches_per_call"`
	Other1   float64 `json:"other_load_server_core"`
	Other0   float64 `json:"other_load_client_core"`
	Before   float64 `json:"other_load_before"`
	Errors   int     `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
}

// runner is `proxybench run`: benchkit's process and core handling, with
// the gateway's fixtures and the backend every configuration calls.
type runner struct {
	*benchkit.Runner
	meridian   string
	fx         *fixtures
	roots      *x509.CertPool
	jwksURL    string
	svcJWT     string
	svcOpen    string
	backend    string
	backendPID int
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

	cs, err := benchkit.ParseConcs(*concs)
	if err != nil {
		return err
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
	br, err := benchkit.NewRunner("proxybench", *out, *serverCPU, *clientCPU)
	if err != nil {
		return err
	}
	r := &runner{Runner: br, meridian: *meridian}
	defer r.StopAll()
	r.StopOnSignal()
	if err := r.setup(*size); err != nil {
		return err
	}
	r.Logf("machine: %d CPUs online, load generator on %d core(s) (GOMAXPROCS %d), servers on core %d; results in %s",
		runtime.NumCPU(), runtime.NumCPU(), runtime.GOMAXPROCS(0), *serverCPU, r.Out)

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
			r.Logf("profile %s: %v", name, err)
			continue
		}
		profs = append(profs, p)
	}
	b, _ := json.MarshalIndent(rows, "", "  ")
	_ = os.WriteFile(filepath.Join(r.Out, "rows.json"), b, 0o644)
	report := r.report(cfgs, cs, rows, census, profs, *rounds, *warm, *measure)
	_ = os.WriteFile(filepath.Join(r.Out, "report.md"), []byte(report), 0o644)
	fmt.Print(report)
	return nil
}

// setup writes the fixtures and starts the JWKS server and the backend.
func (r *runner) setup(size int) error {
	fx, err := newFixtures(filepath.Join(r.Out, "fixtures"), size)
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
	r.backend = benchkit.FreeAddr()
	cmd, err := r.Start("backend", nil, r.Self, "backend", "-addr", r.backend)
	if err != nil {
		return err
	}
	r.backendPID = cmd.Process.Pid
	c, err := benchkit.NewEchoClient(r.backend, nil, "", fx.payload)
	if err != nil {
		return err
	}
	defer c.Close()
	return benchkit.WaitReady(c, 10*time.Second)
}

// startConfig starts the proxy a configuration needs and a client for it.
// inproc runs the gateway inside proxybench (for profiles) instead of
// bin/meridian.
func (r *runner) startConfig(c config, inproc bool, extra ...string) (*benchkit.Running, error) {
	addr := r.backend
	var cmd *exec.Cmd
	var err error
	if c.via != "direct" {
		addr = benchkit.FreeAddr()
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		switch c.via {
		case "gateway":
			svc := r.svcOpen
			if c.jwt {
				svc = r.svcJWT
			}
			if inproc {
				cmd, err = r.Start(c.name+"-inproc", c.env, r.Self, append([]string{"gateway", "-ssl", addr,
					"-backend", "grpc://" + r.backend, "-service_config", svc, "-descriptor", r.fx.descriptor,
					"-certs", r.fx.certDir}, extra...)...)
			} else {
				cmd, err = r.Start(c.name, c.env, r.meridian, "gateway", "--listen_host=127.0.0.1",
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
			cmd, err = r.Start(c.name, nil, "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf)
		case "haproxy":
			conf, cerr := r.fx.haproxyConfig(p, r.backend)
			if cerr != nil {
				return nil, cerr
			}
			cmd, err = r.Start(c.name, nil, "haproxy", "-db", "-f", conf)
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
	var cl benchkit.Client
	switch {
	case c.proto == "rest":
		cl = newRESTClient(addr, r.roots, token, r.fx.restBody)
	case c.via == "direct":
		cl, err = benchkit.NewEchoClient(addr, nil, token, r.fx.payload)
	default:
		// nginx and HAProxy check no token; send it anyway, so that every
		// proxy carries the same headers.
		cl, err = benchkit.NewEchoClient(addr, r.roots, r.fx.token, r.fx.payload)
	}
	if err != nil {
		r.StopRunning(&benchkit.Running{Cmd: cmd})
		return nil, err
	}
	return r.Ready(&benchkit.Running{Client: cl, Cmd: cmd}, 15*time.Second)
}

// measureConfig measures one configuration at each concurrency. A proxy
// that does not start, or dies, gets failed rows (and its log's first
// lines in the error), and the run goes on.
func (r *runner) measureConfig(c config, concs []int, round int, warm, measure time.Duration) []row {
	failed := func(conc int, why string) row {
		r.Logf("round %d %-26s c=%-3d FAILED: %s", round, c.name, conc, why)
		return row{Config: c.name, Conc: conc, Round: round, Errors: 1, FirstErr: why}
	}
	start := func() (*benchkit.Running, error) { return r.startConfig(c, false) }
	return benchkit.MeasureConcs(r.Runner, c.name, concs, start, func(run *benchkit.Running, conc int) row {
		rw := r.window(c, run, conc, warm, measure, nil)
		rw.Round = round
		if run.Exited() {
			rw.FirstErr = "proxy exited during the window" + r.LogTail(c.name) + "; " + rw.FirstErr
		}
		r.Logf("round %d %-26s c=%-3d %8.0f calls/s  p50 %6.0f µs  p99 %6.0f µs  proxy %5.1f µs/call  backend %5.1f  client %5.1f  core1 %3.0f%% (+%2.0f%% other)  core0 %3.0f%% (+%2.0f%% other)  errors %d %s",
			round, c.name, conc, rw.Rate, rw.P50, rw.P99, rw.ProxyCPU, rw.BackCPU, rw.ClientCPU, 100*rw.Core1, 100*rw.Other1, 100*rw.Core0, 100*rw.Other0, rw.Errors, rw.FirstErr)
		return rw
	}, failed)
}

// window runs one measured window and computes its row. hook, when set,
// runs at both ends of the window, after the samples.
func (r *runner) window(c config, run *benchkit.Running, conc int, warm, measure time.Duration, hook func(end bool)) row {
	load := benchkit.Load{Conc: conc, Warm: warm, Measure: measure}
	w := r.Measure(run, r.backendPID, load, func(m *benchkit.Meter, end bool) {
		m.Mark(end)
		if hook != nil {
			hook(end)
		}
	})
	rw := row{Config: c.name, Conc: conc, CallStats: w.CallStats, Core1: w.ServerCore, Core0: w.ClientCore, Other1: w.OtherServer, Other0: w.OtherClient,
		SysShare: w.ProxyKernelShare, CtxSw: w.ProxySwitches, Errors: w.Errors, Before: w.Quiet}
	if w.FirstErr != nil {
		rw.FirstErr = w.FirstErr.Error()
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
		r.Logf("perf not found: no syscall census")
		return out
	}
	const window = 3 * time.Second
	for _, c := range cfgs {
		run, err := r.startConfig(c, false)
		if err != nil {
			r.Logf("census %s: %v", c.name, err)
			continue
		}
		var proxyPIDs []int
		if pid := run.ProxyPID(); pid != 0 {
			proxyPIDs = benchkit.TreePIDs(pid)
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
		r.Logf("census %-26s c=%d: proxy %.2f syscalls/call, %.2f switches/call; backend %.2f syscalls/call",
			c.name, conc, pc.proxySys, pc.proxySwitch, pc.backSys)
		r.StopRunning(run)
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
	path := filepath.Join(r.Out, c.name+".cpu.pprof")
	_ = os.Remove(path + ".done")
	run, err := r.startConfig(c, true, "-cpuprofile", path)
	if err != nil {
		return profileResult{}, err
	}
	defer r.StopRunning(run)
	rw := r.window(c, run, conc, 2*time.Second, 10*time.Second, benchkit.ProfileHook(run.Cmd))
	if !benchkit.WaitProfile(path) {
		return profileResult{}, errors.New("the profile was not written")
	}
	r.Logf("profile %s c=%d: %.0f calls/s, proxy %.1f µs/call (in-process gateway, profiling on) → %s",
		c.name, conc, rw.Rate, rw.ProxyCPU, path)
	return profileResult{config: c, path: path, row: rw}, nil
}
