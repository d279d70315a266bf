package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
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
	Config string `json:"config"`
	Conc   int    `json:"concurrency"`
	Round  int    `json:"round"`
	Size   int    `json:"payload_bytes"`
	benchkit.CallStats
	SysShare float64 `json:"proxy_kernel_share"`
	CtxSw    float64 `json:"proxy_ctx_switches_per_call"`
	RSS      float64 `json:"proxy_peak_rss_mib"`
	Core1    float64 `json:"server_core_busy"`
	Other1   float64 `json:"other_load_server_core"`
	Other0   float64 `json:"other_load_client_core"`
	Errors   int     `json:"errors"`
	FirstErr string  `json:"first_error,omitempty"`
}

// runner is `edgebench run`: benchkit's process and core handling, with
// the edge's fixtures and the backend every configuration calls.
type runner struct {
	*benchkit.Runner
	meridian   string
	edgeEnv    []string // extra environment for the edge process only
	fx         *fixtures
	roots      *x509.CertPool
	backend    string
	backendPID int
}

func newRunner(meridian, out string, serverCPU, clientCPU int) (*runner, error) {
	br, err := benchkit.NewRunner("edgebench", out, serverCPU, clientCPU)
	if err != nil {
		return nil, err
	}
	return &runner{Runner: br, meridian: meridian}, nil
}

// errorPause is how long a load worker waits after a failed call: a dead
// proxy must not spin the client core.
const errorPause = time.Millisecond

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
			r.Logf("%s", res.sizeNote)
			res.size = 1000
			r.StopAll()
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
			r.Logf("profile: %v", err)
		} else {
			res.prof = p
		}
	}
	b, _ := json.MarshalIndent(res.rows, "", "  ")
	_ = os.WriteFile(filepath.Join(r.Out, "rows.json"), b, 0o644)
	return res, nil
}

// setup writes the fixtures and starts the backend on the server core.
func (r *runner) setup(size int) error {
	fx, err := newFixtures(filepath.Join(r.Out, fmt.Sprintf("fixtures-%d", size)), size)
	if err != nil {
		return err
	}
	r.fx = fx
	r.roots = x509.NewCertPool()
	r.roots.AppendCertsFromPEM(fx.caPEM)
	r.backend = benchkit.FreeAddr()
	cmd, err := r.Start("backend", nil, r.Self, "backend", "-addr", r.backend, "-certs", fx.certDir)
	if err != nil {
		return err
	}
	r.backendPID = cmd.Process.Pid
	c, err := benchkit.NewEchoClient(r.backend, r.roots, "", fx.payload)
	if err != nil {
		return err
	}
	defer c.Close()
	return benchkit.WaitReady(c, 10*time.Second)
}

// probeEdge drives the edge for two seconds at concurrency 50 and reports
// whether it kept answering.
func (r *runner) probeEdge() error {
	run, err := r.startConfig(config{name: "edge-probe"}, false)
	if err != nil {
		return errors.New(benchkit.OneLine(err.Error()) + r.LogTail("edge-probe"))
	}
	defer r.StopRunning(run)
	res := benchkit.Load{Conc: 50, Warm: 500 * time.Millisecond, Measure: 2 * time.Second, ErrorPause: errorPause}.Run(run.Client, func(bool) {})
	if run.Exited() {
		return errors.New("the edge process died" + r.LogTail("edge-probe"))
	}
	if res.Errors > 0 {
		return fmt.Errorf("%d of %d calls failed (%v)%s", res.Errors, res.Errors+res.Calls, res.FirstErr, r.LogTail("edge-probe"))
	}
	return nil
}

// startConfig starts what a configuration needs and a client for it.
// inproc runs the edge inside edgebench (for a CPU profile) instead of
// bin/meridian.
func (r *runner) startConfig(c config, inproc bool, extra ...string) (*benchkit.Running, error) {
	addr := r.backend
	var cmd *exec.Cmd
	var err error
	if c.name != "direct" {
		addr = benchkit.FreeAddr()
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
				cmd, err = r.Start(c.name, r.edgeEnv, r.Self, append([]string{"edge", "-config", dir, "-listen", addr,
					"-certs", r.fx.certDir, "-ca", r.fx.caPath}, extra...)...)
			} else {
				cmd, err = r.Start(c.name, env, bin, "edge", "--config", dir, "--region", "us-central1", "--listen", addr,
					"--admin_listen", benchkit.FreeAddr(), "--cert_dir", r.fx.certDir, "--upstream_ca", r.fx.caPath, "--log_level", "warn")
			}
		case c.name == "floor":
			cmd, err = r.Start(c.name, nil, r.Self, "floor", "-listen", addr, "-backend", r.backend, "-certs", r.fx.certDir, "-ca", r.fx.caPath)
		case c.name == "haproxy":
			conf, cerr := r.fx.haproxyConfig(p, r.backend)
			if cerr != nil {
				return nil, cerr
			}
			cmd, err = r.Start(c.name, nil, "haproxy", "-db", "-f", conf)
		default:
			return nil, fmt.Errorf("unknown configuration %q", c.name)
		}
		if err != nil {
			return nil, err
		}
	}
	cl, err := benchkit.NewEchoClient(addr, r.roots, "", r.fx.payload)
	if err != nil {
		r.StopRunning(&benchkit.Running{Cmd: cmd})
		return nil, err
	}
	return r.Ready(&benchkit.Running{Client: cl, Cmd: cmd}, 15*time.Second)
}

// measureConfig measures one configuration at each concurrency; a proxy
// that does not start or dies gets failed rows and the run goes on.
func (r *runner) measureConfig(c config, concs []int, round int, warm, measure time.Duration, size int) []row {
	failed := func(conc int, why string) row {
		r.Logf("round %d %-8s c=%-3d FAILED: %s", round, c.name, conc, why)
		return row{Config: c.name, Conc: conc, Round: round, Size: size, Errors: 1, FirstErr: why}
	}
	start := func() (*benchkit.Running, error) { return r.startConfig(c, false) }
	return benchkit.MeasureConcs(r.Runner, c.name, concs, start, func(run *benchkit.Running, conc int) row {
		rw := r.window(c, run, conc, warm, measure, nil)
		rw.Round, rw.Size = round, size
		if run.Exited() {
			rw.FirstErr = "proxy exited during the window" + r.LogTail(c.name) + "; " + rw.FirstErr
		}
		r.Logf("round %d %-8s c=%-3d %7.0f calls/s  p50 %6.0f µs  p99 %6.0f µs  proxy %5.1f µs/call  backend %5.1f  client %5.1f  core1 %3.0f%% (+%2.0f%% other)  errors %d %s",
			round, c.name, conc, rw.Rate, rw.P50, rw.P99, rw.ProxyCPU, rw.BackCPU, rw.ClientCPU, 100*rw.Core1, 100*rw.Other1, rw.Errors, rw.FirstErr)
		return rw
	}, failed)
}

// window runs one measured window; hook runs at both ends of it (after
// sampling at the start, before it at the end).
func (r *runner) window(c config, run *benchkit.Running, conc int, warm, measure time.Duration, hook func(end bool)) row {
	load := benchkit.Load{Conc: conc, Warm: warm, Measure: measure, ErrorPause: errorPause}
	w := r.Measure(run, r.backendPID, load, func(m *benchkit.Meter, end bool) {
		if end && hook != nil {
			hook(true)
		}
		m.Mark(end)
		if !end && hook != nil {
			hook(false)
		}
	})
	rw := row{Config: c.name, Conc: conc, CallStats: w.CallStats, Core1: w.ServerCore,
		CtxSw: w.ProxySwitches, RSS: w.ProxyPeakRSS, Errors: w.Errors,
		Other1: w.OtherServer, Other0: w.OtherClient, SysShare: w.ProxyKernelShare}
	if w.FirstErr != nil {
		rw.FirstErr = benchkit.OneLine(w.FirstErr.Error())
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
	path := filepath.Join(r.Out, "edge.cpu.pprof")
	_ = os.Remove(path + ".done")
	c := config{name: "edge-inproc"}
	run, err := r.startConfig(c, true, "-cpuprofile", path)
	if err != nil {
		return nil, err
	}
	defer r.StopRunning(run)
	rw := r.window(c, run, conc, 2*time.Second, measure, benchkit.ProfileHook(run.Cmd))
	rw.Size = size
	if !benchkit.WaitProfile(path) {
		return nil, errors.New("the profile was not written" + r.LogTail("edge-inproc"))
	}
	r.Logf("profile edge c=%d: %.0f calls/s, edge %.1f µs/call (in-process, profiling on) → %s", conc, rw.Rate, rw.ProxyCPU, path)
	return &profileResult{path: path, exe: r.Self, row: rw}, nil
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
