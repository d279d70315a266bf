package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Local runs each session as an OS process on this machine, started from a
// command template. It is the default runtime: `meridian workload` (a small
// placeholder notebook server) unless the operator points it at
// `jupyter lab --port={port} …`.
type Local struct {
	// Command is the argv template. {port}, {session}, {token}, {pool} and
	// {owner} are replaced in each argument. Required.
	Command []string
	// Host is where workloads listen and how endpoints name them.
	// Default "127.0.0.1".
	Host string
	// Grace is how long a workload has between SIGTERM and SIGKILL. Default 10s.
	Grace time.Duration
	// LogDir, when set, receives each workload's output as <session>.log.
	LogDir string
	// Log receives lifecycle events. Default: discard.
	Log *slog.Logger
	// OnChange, when set, is called after a workload becomes ready or
	// exits, so the scheduler can react at once instead of at its next tick.
	OnChange func(sessionID string)

	mu    sync.Mutex
	procs map[string]*proc
}

var _ Runtime = (*Local)(nil)

type proc struct {
	cmd      *exec.Cmd
	endpoint string
	done     chan struct{} // closed when the process has exited
	exitMsg  string        // set before done is closed
	ready    chan struct{} // closed once it answers HTTP
	stopOnce sync.Once
}

// Name returns "local".
func (l *Local) Name() string { return "local" }

func (l *Local) host() string {
	if l.Host == "" {
		return "127.0.0.1"
	}
	return l.Host
}

func (l *Local) log() *slog.Logger {
	if l.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l.Log
}

// Start launches the workload process.
func (l *Local) Start(ctx context.Context, spec Spec) error {
	if len(l.Command) == 0 {
		return errors.New("local runtime: no command configured")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.procs == nil {
		l.procs = map[string]*proc{}
	}
	if _, ok := l.procs[spec.SessionID]; ok {
		return nil
	}
	port, err := freePort(l.host())
	if err != nil {
		return fmt.Errorf("local runtime: finding a free port: %w", err)
	}
	r := strings.NewReplacer("{port}", strconv.Itoa(port), "{session}", spec.SessionID, "{token}", spec.Token,
		"{pool}", spec.Pool, "{owner}", spec.Owner, "{host}", l.host())
	argv := make([]string, len(l.Command))
	for i, a := range l.Command {
		argv[i] = r.Replace(a)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	// Its own process group, so Stop reaches its children too; and killed
	// with the scheduler, so a crashed scheduler leaves no orphans (the
	// restarted one marks their sessions CRASHED).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "MERIDIAN_SESSION="+spec.SessionID, "MERIDIAN_TOKEN="+spec.Token, "PORT="+strconv.Itoa(port))
	var out io.WriteCloser
	if l.LogDir != "" {
		f, err := os.OpenFile(filepath.Join(l.LogDir, spec.SessionID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("local runtime: opening log: %w", err)
		}
		cmd.Stdout, cmd.Stderr, out = f, f, f
	}
	if err := cmd.Start(); err != nil {
		if out != nil {
			out.Close()
		}
		return fmt.Errorf("local runtime: starting %q: %w", argv[0], err)
	}
	p := &proc{
		cmd:      cmd,
		endpoint: fmt.Sprintf("http://%s/?token=%s", net.JoinHostPort(l.host(), strconv.Itoa(port)), spec.Token),
		done:     make(chan struct{}),
		ready:    make(chan struct{}),
	}
	l.procs[spec.SessionID] = p
	l.log().Info("workload started", "session", spec.SessionID, "pid", cmd.Process.Pid, "port", port)
	go func() {
		err := cmd.Wait()
		if out != nil {
			out.Close()
		}
		p.exitMsg = describeExit(err)
		close(p.done)
		l.changed(spec.SessionID)
	}()
	go func() {
		if p.probe(net.JoinHostPort(l.host(), strconv.Itoa(port))) {
			l.changed(spec.SessionID)
		}
	}()
	return nil
}

func (l *Local) changed(id string) {
	if l.OnChange != nil {
		l.OnChange(id)
	}
}

// probe marks the process ready once anything answers HTTP on its port; it
// reports whether it did before the process exited.
func (p *proc) probe(addr string) bool {
	client := &http.Client{Timeout: time.Second}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return false
		case <-t.C:
		}
		resp, err := client.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			close(p.ready)
			return true
		}
	}
}

func describeExit(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exited with status 0"
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by signal " + ws.Signal().String()
		}
		return fmt.Sprintf("exited with status %d", ee.ExitCode())
	default:
		return err.Error()
	}
}

// Status reports the process's phase.
func (l *Local) Status(ctx context.Context, id string) (Status, error) {
	l.mu.Lock()
	p, ok := l.procs[id]
	l.mu.Unlock()
	if !ok {
		return Status{Phase: Unknown}, nil
	}
	select {
	case <-p.done:
		return Status{Phase: Exited, Message: p.exitMsg}, nil
	default:
	}
	select {
	case <-p.ready:
		return Status{Phase: Ready, Endpoint: p.endpoint}, nil
	default:
		return Status{Phase: Pending}, nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after Grace.
func (l *Local) Stop(ctx context.Context, id string) error {
	l.mu.Lock()
	p, ok := l.procs[id]
	l.mu.Unlock()
	if !ok {
		return nil
	}
	grace := l.Grace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	pid := p.cmd.Process.Pid
	p.stopOnce.Do(func() { _ = syscall.Kill(-pid, syscall.SIGTERM) })
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		l.log().Warn("workload ignored SIGTERM; killing", "session", id, "pid", pid, "grace", grace)
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	case <-ctx.Done():
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	l.mu.Lock()
	delete(l.procs, id)
	l.mu.Unlock()
	l.log().Info("workload stopped", "session", id, "pid", pid, "how", p.exitMsg)
	return nil
}

// StopAll stops every workload, for shutdown.
func (l *Local) StopAll(ctx context.Context) {
	l.mu.Lock()
	ids := make([]string, 0, len(l.procs))
	for id := range l.procs {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { _ = l.Stop(ctx, id) })
	}
	wg.Wait()
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
