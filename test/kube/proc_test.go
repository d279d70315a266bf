package kube

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/proclog"
)

// proc is a meridian process started by a test. When the test ends it is
// stopped (SIGTERM, or SIGKILL at once if the test failed) and its log is
// checked for data races and panics; on failure its tail is shown.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed once the process has been reaped
}

// startProc runs the meridian binary with args until the test ends; its
// output goes to a log file in dir.
func startProc(t testing.TB, bin, dir, name string, args ...string) *proc {
	t.Helper()
	p, err := launch(t, bin, dir, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cleanup)
	return p
}

// launch starts a process whose end its caller owns (p.cleanup).
func launch(t testing.TB, bin, dir, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, strings.NewReplacer(" ", "-", "/", "-", ":", "-").Replace(name)+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// childEnv is this environment without MERIDIAN_* variables; a
// race-enabled binary does not sleep a second before exiting.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MERIDIAN_") && !strings.HasPrefix(kv, "KUBECONFIG=") {
			env = append(env, kv)
		}
	}
	if _, ok := os.LookupEnv("GORACE"); !ok {
		env = append(env, "GORACE=atexit_sleep_ms=50")
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// terminate sends SIGTERM (a pod's deletion, a rolling restart).
func (p *proc) terminate() {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Errorf("%s: SIGTERM: %v", p.name, err)
	}
}

// wait waits up to d for the process to exit; false if it still runs.
func (p *proc) wait(d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-p.done:
		return true
	case <-tm.C:
		return false
	}
}

// stop ends the process: SIGTERM, or SIGKILL at once if the test failed,
// and SIGKILL if it is still there 20 s after SIGTERM.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	if p.t.Failed() {
		// A goroutine dump into the log, for what it was doing.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		if !p.wait(5 * time.Second) {
			_ = p.cmd.Process.Kill()
		}
	} else {
		p.terminate()
		if !p.wait(20 * time.Second) {
			p.t.Errorf("%s did not exit within 20s of SIGTERM; killing it", p.name)
			_ = p.cmd.Process.Kill()
		}
	}
	if !p.wait(10 * time.Second) {
		p.t.Errorf("%s (pid %d) survived SIGKILL for 10s", p.name, p.cmd.Process.Pid)
	}
}

func (p *proc) cleanup() {
	p.stop()
	b, _ := os.ReadFile(p.log)
	if bad := proclog.BadLines(b); bad != "" {
		p.t.Errorf("%s: %s reports a data race or a crash:\n%s", p.name, p.log, bad)
	}
	if p.t.Failed() {
		p.t.Logf("--- %s log (%s), last lines:\n%s", p.name, p.log, tail(b, 40))
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
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
