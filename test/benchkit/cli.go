package benchkit

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Command is a subcommand of a benchmark program.
type Command struct {
	Name string
	Run  func(args []string) error
}

// Main runs the subcommand the first argument names with the arguments
// after it, and exits: with status 2 without a subcommand, 1 when it fails
// (after printing "prog: error").
func Main(prog string, cmds ...Command) {
	var names []string
	for _, c := range cmds {
		names = append(names, c.Name)
	}
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, "usage: %s %s [flags]  (see the package doc)\n", prog, strings.Join(names, "|"))
		os.Exit(2)
	}
	run := func([]string) error {
		return fmt.Errorf("unknown subcommand %q: want %s or %s", os.Args[1], strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
	}
	for _, c := range cmds {
		if c.Name == os.Args[1] {
			run = c.Run
		}
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, prog+":", err)
		os.Exit(1)
	}
}

// AwaitStop blocks until SIGTERM or SIGINT arrives or life has passed, and
// returns nil; or until failed (which may be nil) delivers an error, and
// returns it.
func AwaitStop(life time.Duration, failed <-chan error) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	select {
	case <-sig:
	case <-time.After(life):
	case err := <-failed:
		return err
	}
	return nil
}

// CPUModel is the first "model name" of /proc/cpuinfo, or "".
func CPUModel() string {
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}
