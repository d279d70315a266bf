package kubetest

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
)

// PodNetwork is local inside the test's network namespace: pod CIDRs and
// node IPs come from it, and any of its addresses can be bound.
const PodNetwork = "10.244.0.0/16"

// envInside marks the copy of the test binary that runs inside the
// network namespace.
const envInside = "MERIDIAN_KUBETEST_NETNS"

// errNotInNamespace: Start was called outside the network namespace that
// Main makes.
var errNotInNamespace = errors.New("not inside kubetest's network namespace: call kubetest.Main(m) from the package's TestMain")

// Main runs a test package's tests inside a network namespace of their
// own; call it from TestMain. The first call re-executes the test binary
// in a fresh network namespace (root only) and exits with its status; the
// copy inside brings up loopback, makes every address of PodNetwork local
// and runs the tests. Not being root is a failure, not a skip: `make test`
// runs as root. With -short, no namespace is made and Start skips.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	switch {
	case os.Getenv(envInside) == "1":
		if err := setUpNamespace(); err != nil {
			fmt.Fprintln(os.Stderr, "kubetest:", err)
			return 1
		}
		return m.Run()
	case testing.Short():
		return m.Run()
	}
	code, err := reexecInNamespace()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubetest:", err)
		return 1
	}
	return code
}

// reexecInNamespace runs this test binary again, with the same arguments,
// in a new network namespace, and returns its exit status. The copy dies
// with this process (Pdeathsig), and SIGINT/SIGTERM are passed on to it so
// that it can print what it was doing.
func reexecInNamespace() (int, error) {
	if os.Geteuid() != 0 {
		return 0, errors.New("tests against real control planes run in a network namespace of their own, which needs root: " +
			"run them as root (make test does), or pass -short to skip them")
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("finding the test binary to re-execute: %w", err)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), envInside+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("starting the test binary in a new network namespace (clone with CLONE_NEWNET; needs CAP_SYS_ADMIN): %w", err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-signals:
				_ = cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), nil
	default:
		return 0, fmt.Errorf("test binary in the network namespace: %w", err)
	}
}

// setUpNamespace brings up loopback and routes all of PodNetwork to it,
// after checking that this is an isolated namespace: only loopback, so no
// packet to a pod address can leave the machine.
func setUpNamespace() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("listing network interfaces: %w", err)
	}
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("%s=1 but interface %s is here: this is not an isolated network namespace; unset %s and let kubetest.Main make one",
				envInside, i.Name, envInside)
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the ip command sets up the network namespace: install iproute2 (scripts/ensure-tools.sh does): %w", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"route", "replace", "local", PodNetwork, "dev", "lo"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
	}
	return nil
}

// inNamespace reports whether this process runs inside the namespace.
func inNamespace() bool { return os.Getenv(envInside) == "1" }
