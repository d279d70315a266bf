package benchkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Runner is what a benchmark's orchestrator (`proxybench run`, `edgebench
// run`) keeps: where results go, the two cores, and the servers it started,
// each pinned to the server core with its output in a log file.
type Runner struct {
	Name      string // the program's name, the prefix of its log lines
	Out       string // directory for results, logs and profiles
	Self      string // this program's executable, for its server subcommands
	ServerCPU int    // core for the backend and the proxies
	ClientCPU int    // core this program (the load generator) is pinned to

	mu        sync.Mutex
	procs     map[int]*exec.Cmd
	quietWait time.Duration // waited so far for the machine to be quiet
}

// NewRunner makes the output directory (a new temporary one when out is
// empty).
func NewRunner(name, out string, serverCPU, clientCPU int) (*Runner, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if out == "" {
		if out, err = os.MkdirTemp("", name+"-"); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	return &Runner{Name: name, Out: out, Self: self, ServerCPU: serverCPU, ClientCPU: clientCPU, procs: map[int]*exec.Cmd{}}, nil
}

// Logf writes a line to standard error, prefixed with the program's name.
func (r *Runner) Logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, r.Name+": "+format+"\n", a...)
}

// StopOnSignal stops every server and exits with status 130 at SIGINT or
// SIGTERM.
func (r *Runner) StopOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		r.StopAll()
		os.Exit(130)
	}()
}

// Start runs a server pinned to the server core, with env added to this
// process's environment and its output in Out/name.log. It dies with this
// process; Stop ends it.
func (r *Runner) Start(name string, env []string, prog string, args ...string) (*exec.Cmd, error) {
	log, err := os.Create(filepath.Join(r.Out, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("taskset", append([]string{"-c", strconv.Itoa(r.ServerCPU), prog}, args...)...)
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

// Stop ends a process Start started, and its descendants: SIGTERM, then
// SIGKILL after 5 s.
func (r *Runner) Stop(cmd *exec.Cmd) {
	r.mu.Lock()
	delete(r.procs, cmd.Process.Pid)
	r.mu.Unlock()
	pids := TreePIDs(cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && Alive(cmd.Process.Pid) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pids {
		if Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// StopAll stops every server still running.
func (r *Runner) StopAll() {
	r.mu.Lock()
	var cmds []*exec.Cmd
	for _, c := range r.procs {
		cmds = append(cmds, c)
	}
	r.mu.Unlock()
	for _, c := range cmds {
		r.Stop(c)
	}
}

// LogTail quotes the start of a server's panic or fatal error, or else its
// last log line, for an error message.
func (r *Runner) LogTail(name string) string {
	b, err := os.ReadFile(filepath.Join(r.Out, name+".log"))
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
	return " (log: " + OneLine(lines[len(lines)-1]) + ")"
}

// WaitQuiet waits (10 s at most per window, 2 min in all) until both
// cores are nearly idle, since other work on the machine skews every
// number; it returns the busiest core's load seen last.
func (r *Runner) WaitQuiet() float64 {
	const limit, total = 10 * time.Second, 2 * time.Minute
	start := time.Now()
	for {
		a := ReadCoreTicks()
		time.Sleep(300 * time.Millisecond)
		b := ReadCoreTicks()
		load := max(a.Busy(b, r.ServerCPU), a.Busy(b, r.ClientCPU))
		if load < 0.10 || time.Since(start) > limit || r.quietWait > total {
			r.quietWait += time.Since(start)
			return load
		}
	}
}

// Measure runs one measured window of load through run's client, once
// both cores are quiet (WaitQuiet), and meters it: run's proxy with its
// descendants, the backend, this process and the two cores. mark, when
// set, stands in for the meter's Mark at both ends of the window, to do
// something there (e.g. a ProfileHook) before or after the samples; it
// must call m.Mark(end).
func (r *Runner) Measure(run *Running, backendPID int, load Load, mark func(m *Meter, end bool)) Window {
	m := &Meter{BackendPIDs: []int{backendPID}, ServerCPU: r.ServerCPU, ClientCPU: r.ClientCPU}
	if pid := run.ProxyPID(); pid != 0 {
		m.ProxyPIDs = TreePIDs(pid)
	}
	quiet := r.WaitQuiet()
	if mark == nil {
		mark = (*Meter).Mark
	}
	w := m.Window(load.Run(run.Client, func(end bool) { mark(m, end) }))
	w.Quiet = quiet
	return w
}

// Running is a configuration ready to take calls.
type Running struct {
	Client Client
	Cmd    *exec.Cmd // the proxy; nil for direct calls
}

// ProxyPID is the proxy's process ID, 0 for direct calls.
func (run *Running) ProxyPID() int {
	if run.Cmd == nil {
		return 0
	}
	return run.Cmd.Process.Pid
}

// Exited reports whether run's proxy has exited.
func (run *Running) Exited() bool { return run.Cmd != nil && !Alive(run.Cmd.Process.Pid) }

// MeasureConcs measures one configuration (its log Out/name.log) at each
// concurrency, in order: start starts it, window measures a window. When
// it does not start, or its proxy has exited before a window, failed makes
// that concurrency's result from why, which quotes the log.
func MeasureConcs[R any](r *Runner, name string, concs []int, start func() (*Running, error),
	window func(run *Running, conc int) R, failed func(conc int, why string) R) []R {
	var out []R
	run, err := start()
	if err != nil {
		for _, conc := range concs {
			out = append(out, failed(conc, "did not start: "+OneLine(err.Error())+r.LogTail(name)))
		}
		return out
	}
	defer r.StopRunning(run)
	for _, conc := range concs {
		if run.Exited() {
			out = append(out, failed(conc, "proxy exited earlier"+r.LogTail(name)))
			continue
		}
		out = append(out, window(run, conc))
	}
	return out
}

// Ready returns run once a call through its client succeeds, waiting up
// to d; if none does, it stops run.
func (r *Runner) Ready(run *Running, d time.Duration) (*Running, error) {
	if err := WaitReady(run.Client, d); err != nil {
		r.StopRunning(run)
		return nil, err
	}
	return run, nil
}

// StopRunning closes run's client and stops its proxy (either may be
// missing).
func (r *Runner) StopRunning(run *Running) {
	if run.Client != nil {
		run.Client.Close()
	}
	if run.Cmd != nil {
		r.Stop(run.Cmd)
	}
}

// Alive reports whether a process exists and is neither a zombie nor dead.
func Alive(pid int) bool {
	f := StatFields(pid)
	return len(f) > 2 && f[2] != "Z" && f[2] != "X"
}

// OneLine folds s's white space, newlines included, into single spaces.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// FreeAddr picks a loopback port nobody listens on.
func FreeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ParseConcs reads a -conc flag: comma-separated concurrencies, each ≥ 1.
func ParseConcs(s string) ([]int, error) {
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
