package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/proclog"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// proc is a meridian process started by a test. When the test ends it is
// stopped (SIGTERM, or SIGKILL at once if the test failed), its logs are
// checked for data races and panics, and on failure their tails are shown.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  string
	// logGlobs are more logs to check when the test ends (its children's).
	logGlobs []string
	// stopSig ends it when the test is done; default SIGTERM.
	stopSig syscall.Signal
	done    chan struct{} // closed once the process has been reaped
}

// startProc starts meridian with args; its stdout and stderr go to a log file.
func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, name, nil, args...)
}

// startProcEnv is startProc with env added to the process's environment.
func startProcEnv(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), strings.NewReplacer(" ", "-", "/", "-").Replace(name)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(meridianBin, args...)
	cmd.Env = append(childEnv(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Dies with the test binary, so nothing outlives a crashed test run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	return p
}

// childEnv is this environment without MERIDIAN_* variables, so that a
// developer's $MERIDIAN_USER or $MERIDIAN_ENDPOINT cannot change a test.
// A race-enabled binary sleeps a second before exiting 0 unless GORACE
// says otherwise; the CLI commands here would spend most of their time so.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MERIDIAN_") {
			env = append(env, kv)
		}
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		env = append(env, "GORACE=atexit_sleep_ms=50")
	}
	return env
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("%s: sending %s: %v", p.name, sig, err)
	}
}

// wait waits up to d for the process to exit and returns its exit code
// (-1 if a signal ended it); ok is false if it is still running.
func (p *proc) wait(d time.Duration) (code int, ok bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-t.C:
		return 0, false
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGTERM (or its stopSig), or SIGKILL at once if
// the test has failed; SIGKILL if it is still there 15s after the signal.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	sig := p.stopSig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if p.t.Failed() {
		_ = p.cmd.Process.Kill()
	} else {
		_ = p.cmd.Process.Signal(sig)
		if _, ok := p.wait(15 * time.Second); !ok {
			p.t.Errorf("%s did not exit within 15s of %s; killing it", p.name, sig)
			_ = p.cmd.Process.Kill()
		}
	}
	if _, ok := p.wait(10 * time.Second); !ok {
		p.t.Errorf("%s (pid %d) survived SIGKILL for 10s", p.name, p.pid())
	}
}

func (p *proc) cleanup() {
	p.stop()
	logs := []string{p.log}
	for _, g := range p.logGlobs {
		m, _ := filepath.Glob(g)
		logs = append(logs, m...)
	}
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if bad := proclog.BadLines(b); bad != "" {
			p.t.Errorf("%s: %s reports a data race or a crash:\n%s", p.name, l, bad)
		}
	}
	if p.t.Failed() {
		p.t.Logf("--- %s log (%s), last lines:\n%s", p.name, p.log, tail(p.log, 60))
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// result is how a short-lived meridian command ended.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// meridian runs the binary with args to completion, failing the test if it
// takes longer than timeout.
func meridian(t testing.TB, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, meridianBin, args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	if ctx.Err() != nil {
		t.Fatalf("meridian %s: still running after %s\n%s", strings.Join(args, " "), timeout, r)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("meridian %s: %v", strings.Join(args, " "), err)
	}
	if bad := proclog.BadLines(stderr.Bytes()); bad != "" {
		t.Errorf("meridian %s reports a data race or a crash:\n%s", strings.Join(args, " "), bad)
	}
	return r
}

// freeAddr returns a 127.0.0.1 address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// testCtx returns a context that ends after d or when the test ends.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// asUser adds the caller identity a gateway would forward; the scheduler
// trusts it from loopback.
func asUser(ctx context.Context, user string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, scheduler.UserInfoHeader, scheduler.UserInfo(user))
}

// waitFor polls cond every 25ms until it holds, failing the test after
// timeout with cond's last description of what it saw.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, last := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %s, still waiting for %s; last seen: %s", timeout, what, last)
		case <-tick.C:
		}
	}
}

// answersHTTP reports whether url answers HTTP at all.
func answersHTTP(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// workloadAddr is where a session's workload serves, as its scheduler
// tells a trusted peer (ResolveNotebook), and the gateway proxies to.
type workloadAddr struct {
	// url is the workload's own address with the notebook's path, e.g.
	// http://127.0.0.1:40969/notebooks/{session_id}/.
	url string
	// token is the workload's own token, which the gateway adds.
	token string
}

// resolveNotebook asks a scheduler about a session as owner, as the
// gateway does: conn must be one it trusts to assert identities.
func resolveNotebook(t testing.TB, ctx context.Context, conn grpc.ClientConnInterface, owner, name string) *schedulerv1.Notebook {
	t.Helper()
	nb, err := schedulerv1.NewNotebooksClient(conn).ResolveNotebook(asUser(ctx, owner), &schedulerv1.ResolveNotebookRequest{Name: name})
	if err != nil {
		t.Fatalf("ResolveNotebook(%s) as %s: %v", name, owner, err)
	}
	return nb
}

// resolveWorkload is where a RUNNING session's workload serves; it fails
// the test if the scheduler names none.
func resolveWorkload(t testing.TB, ctx context.Context, conn grpc.ClientConnInterface, owner, name string) workloadAddr {
	t.Helper()
	nb := resolveNotebook(t, ctx, conn, owner, name)
	if nb.WorkloadUrl == "" || nb.WorkloadToken == "" {
		t.Fatalf("ResolveNotebook(%s): %s, workload %q, token set %v; want a RUNNING session's workload address and token",
			name, describe(nb.Session), nb.WorkloadUrl, nb.WorkloadToken != "")
	}
	return workloadAddr{url: strings.TrimSuffix(nb.WorkloadUrl, "/") + "/notebooks/" + sessionID(name) + "/", token: nb.WorkloadToken}
}

// serves reports whether the workload answers its page, to its token, 200.
func (w workloadAddr) serves(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Authorization", "token "+w.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// answers reports whether anything answers HTTP at the workload's address.
func (w workloadAddr) answers(ctx context.Context) bool { return answersHTTP(ctx, w.url) }

// schedulerSpec says how to run one `meridian scheduler` process.
type schedulerSpec struct {
	Region   string
	Instance string
	Store    string
	// Config is the pools YAML; empty means the built-in dev pools.
	Config string
	// Drain is --drain; default 0s.
	Drain string
	// Args are more flags; Env, more environment.
	Args, Env []string
}

// schedulerProc is a running scheduler process and a client for it.
type schedulerProc struct {
	*proc
	// addr, conn, cl and health are set by waitServing.
	addr   string
	conn   *grpc.ClientConn
	cl     schedulerv1.SessionSchedulerClient
	health healthpb.HealthClient
}

// startScheduler runs a scheduler and waits until its health is SERVING.
func startScheduler(t testing.TB, s schedulerSpec) *schedulerProc {
	t.Helper()
	sp := launchScheduler(t, s)
	sp.waitServing(t, 30*time.Second)
	return sp
}

// launchScheduler runs a scheduler without waiting for it. It listens on
// ports the kernel picks, so that nothing else on the machine can take
// them first; waitServing learns the address from its log.
func launchScheduler(t testing.TB, s schedulerSpec) *schedulerProc {
	t.Helper()
	if s.Drain == "" {
		s.Drain = "0s"
	}
	dir := t.TempDir()
	workloads := filepath.Join(dir, "workloads")
	if err := os.Mkdir(workloads, 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"scheduler", "--region", s.Region, "--listen", "127.0.0.1:0", "--metrics_listen", "127.0.0.1:0",
		"--store", s.Store, "--instance", s.Instance, "--drain", s.Drain, "--workload_grace", "2s",
		"--workload_log_dir", workloads}
	if s.Config != "" {
		path := filepath.Join(dir, "pools.yaml")
		if err := os.WriteFile(path, []byte(s.Config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	// Workloads outlive their scheduler; none may outlive the test. (A
	// cleanup registered first runs last, after the scheduler's.)
	t.Cleanup(func() { killWorkloads(t, s.Store, s.Region) })
	p := startProcEnv(t, "scheduler "+s.Instance, s.Env, append(args, s.Args...)...)
	p.logGlobs = []string{filepath.Join(workloads, "*.log")}
	// SIGINT: its workloads stop with it.
	p.stopSig = syscall.SIGINT
	return &schedulerProc{proc: p}
}

// listenAddr returns the address from the scheduler's "scheduler serving"
// log line, or "" before it has logged it.
func (s *schedulerProc) listenAddr() string {
	b, _ := os.ReadFile(s.log)
	for line := range strings.Lines(string(b)) {
		var rec struct{ Msg, Listen string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "scheduler serving" && rec.Listen != "" {
			return rec.Listen
		}
	}
	return ""
}

func (s *schedulerProc) dial(t testing.TB) {
	t.Helper()
	// Reconnect quickly: the default backoff would add a second whenever
	// the first health check comes before the server is ready.
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.conn, s.cl, s.health = conn, schedulerv1.NewSessionSchedulerClient(conn), healthpb.NewHealthClient(conn)
}

// waitServing waits for the scheduler to listen, then polls grpc health
// until SERVING; it fails the test at once if the process exits.
func (s *schedulerProc) waitServing(t testing.TB, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, s.name+" to be SERVING", func() (bool, string) {
		if s.exited() {
			t.Fatalf("%s exited while starting (exit %d):\n%s", s.name, s.cmd.ProcessState.ExitCode(), tail(s.log, 40))
		}
		if s.conn == nil {
			if s.addr = s.listenAddr(); s.addr == "" {
				return false, "no \"scheduler serving\" line in its log yet"
			}
			s.dial(t)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		resp, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return false, err.Error()
		}
		return resp.Status == healthpb.HealthCheckResponse_SERVING, resp.Status.String()
	})
}

// create starts a session and fails the test on error.
func (s *schedulerProc) create(t testing.TB, ctx context.Context, user, pool, requestID string) *schedulerv1.Session {
	t.Helper()
	sess, err := s.cl.CreateSession(asUser(ctx, user), &schedulerv1.CreateSessionRequest{Pool: pool, RequestId: requestID})
	if err != nil {
		t.Fatalf("CreateSession(user %s, pool %s, request %q) via %s: %v", user, pool, requestID, s.name, err)
	}
	return sess
}

// waitSession polls GetSession until cond holds.
func (s *schedulerProc) waitSession(t testing.TB, user, name string, timeout time.Duration, what string, cond func(*schedulerv1.Session) bool) *schedulerv1.Session {
	t.Helper()
	var last *schedulerv1.Session
	waitFor(t, timeout, name+" to be "+what, func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		got, err := s.cl.GetSession(asUser(ctx, user), &schedulerv1.GetSessionRequest{Name: name})
		if err != nil {
			return false, err.Error()
		}
		last = got
		return cond(got), describe(got)
	})
	return last
}

// list returns all of user's sessions (one page of up to 1000).
func (s *schedulerProc) list(t testing.TB, ctx context.Context, user string) []*schedulerv1.Session {
	t.Helper()
	resp, err := s.cl.ListSessions(asUser(ctx, user), &schedulerv1.ListSessionsRequest{PageSize: 1000})
	if err != nil {
		t.Fatalf("ListSessions(%s) via %s: %v", user, s.name, err)
	}
	if resp.NextPageToken != "" {
		t.Fatalf("ListSessions(%s): more than one page", user)
	}
	return resp.Sessions
}

func describe(s *schedulerv1.Session) string {
	if s == nil {
		return "<nil>"
	}
	d := fmt.Sprintf("%s %s", s.Name, s.State)
	if s.State == schedulerv1.Session_QUEUED {
		d += fmt.Sprintf(" %d/%d", s.QueuePosition, s.QueueSize)
	}
	if s.StopReason != schedulerv1.Session_STOP_REASON_UNSPECIFIED {
		d += " " + s.StopReason.String()
	}
	return d + fmt.Sprintf(" (%s)", s.StatusMessage)
}

func sessionID(name string) string { return strings.TrimPrefix(name, "sessions/") }

func isState(st schedulerv1.Session_State) func(*schedulerv1.Session) bool {
	return func(s *schedulerv1.Session) bool { return s.State == st }
}

// killWorkloads kills the workloads of a region's live sessions in the
// store at url that still run, as their records in the store name them:
// workloads outlive schedulers, and a test that kills one (or fails) must
// not leave them behind. A recorded process whose working directory is
// not the recorded one is someone else's and is left alone.
func killWorkloads(t testing.TB, url, region string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Open(ctx, url)
	if err != nil {
		t.Logf("cleanup: opening %s to find workloads: %v", url, err)
		return
	}
	defer st.Close()
	var live []*store.Session
	_ = st.View(ctx, func(tx store.Tx) (err error) {
		live, err = tx.RegionSessions(ctx, region, schedulerv1.Session_STARTING, schedulerv1.Session_RUNNING, schedulerv1.Session_STOPPING)
		return err
	})
	for _, s := range live {
		var rec struct {
			PID int    `json:"pid"`
			Dir string `json:"dir"`
		}
		if json.Unmarshal([]byte(s.Workload), &rec) != nil || rec.PID <= 1 {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", rec.PID)); err == nil && cwd == rec.Dir {
			_ = syscall.Kill(-rec.PID, syscall.SIGKILL)
			_ = os.RemoveAll(rec.Dir)
		}
	}
}
