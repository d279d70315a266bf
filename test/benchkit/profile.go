package benchkit

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Profiled runs a server in this process, for an orchestrator to profile
// it: the server subcommands' -cpuprofile and -max_lifetime flags.
type Profiled struct {
	Path string        // where the CPU profile goes; none when empty
	Life time.Duration // how long the server may run
}

// RegisterFlags defines -cpuprofile and -max_lifetime (default 5 min) in fs.
func (p *Profiled) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&p.Path, "cpuprofile", "", "write the CPU profile taken between SIGUSR1 and SIGUSR2 here")
	fs.DurationVar(&p.Life, "max_lifetime", 5*time.Minute, "stop by itself after this long")
}

// Run runs a server (run returns when its context ends) until SIGTERM,
// SIGINT or p.Life has passed. When p.Path is set, it takes a CPU profile
// into it between SIGUSR1 and SIGUSR2 and, at SIGUSR2, an allocation
// profile beside it (.allocs.pprof for .cpu.pprof), then writes
// p.Path+".done" to say both are complete.
func (p *Profiled) Run(run func(ctx context.Context) error) error {
	path := p.Path
	ctx, cancel := context.WithTimeout(context.Background(), p.Life)
	defer cancel()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	go func() {
		var out *os.File
		for s := range sig {
			switch s {
			case syscall.SIGUSR1:
				if path == "" || out != nil {
					continue
				}
				f, err := os.Create(path)
				if err != nil {
					fmt.Fprintln(os.Stderr, "cpuprofile:", err)
					continue
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					fmt.Fprintln(os.Stderr, "cpuprofile:", err)
					f.Close()
					continue
				}
				out = f
			case syscall.SIGUSR2:
				if out == nil {
					continue
				}
				pprof.StopCPUProfile()
				out.Close()
				out = nil
				// Allocations since the start, for `go tool pprof -sample_index=alloc_space`.
				if f, err := os.Create(strings.TrimSuffix(path, ".cpu.pprof") + ".allocs.pprof"); err == nil {
					_ = pprof.Lookup("allocs").WriteTo(f, 0)
					f.Close()
				}
				// Tell the orchestrator the file is complete.
				_ = os.WriteFile(path+".done", nil, 0o644)
			default:
				cancel()
				return
			}
		}
	}()
	return run(ctx)
}

// ProfileHook signals a server in Profiled.Run to start its CPU profile
// (end false) or to stop it (end true).
func ProfileHook(cmd *exec.Cmd) func(end bool) {
	return func(end bool) {
		if !end {
			_ = cmd.Process.Signal(syscall.SIGUSR1)
		} else {
			_ = cmd.Process.Signal(syscall.SIGUSR2)
		}
	}
}

// WaitProfile waits up to 5 s for Profiled.Run to have written the profile
// at path, and reports whether it has.
func WaitProfile(path string) bool {
	for range 100 {
		if _, err := os.Stat(path + ".done"); err == nil {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// Category is a kind of work in a CPU profile: the samples with a frame
// that Re matches.
type Category struct {
	Name string
	Re   *regexp.Regexp
}

// ProfileSummary says how Summarize groups a CPU profile and what it lists
// after the tables.
type ProfileSummary struct {
	// ExclusiveTitle begins the first table's heading.
	ExclusiveTitle string
	// Exclusive: each sample goes to the first category that matches any
	// frame of its stack, so the order matters (end with a catch-all).
	Exclusive []Category
	// Inclusive: a sample counts in every category on its stack.
	Inclusive []Category
	// Top is the flags of the `go tool pprof` listing that follows, under
	// TopTitle, without its header lines that begin with one of TopOmit.
	Top      []string
	TopTitle string
	TopOmit  []string
}

// Summarize reads the profile at path (of the program exe) with `go tool
// pprof` and renders the shares of each category as Markdown tables,
// then the listing.
func (ps ProfileSummary) Summarize(exe, path string) string {
	traces, err := exec.Command("go", "tool", "pprof", "-traces", exe, path).Output()
	if err != nil {
		return fmt.Sprintf("(go tool pprof: %v)\n", err)
	}
	samples := ParseTraces(string(traces))
	var total time.Duration
	for _, s := range samples {
		total += s.CPU
	}
	if total == 0 {
		return "(empty profile)\n"
	}
	var b strings.Builder
	b.WriteString(ps.ExclusiveTitle + " (each sample counted once, first match in this order):\n\n| share | kind of work |\n|---|---|\n")
	ex := make([]time.Duration, len(ps.Exclusive))
	for _, s := range samples {
		for i, c := range ps.Exclusive {
			if slices.ContainsFunc(s.Frames, c.Re.MatchString) {
				ex[i] += s.CPU
				break
			}
		}
	}
	for i, c := range ps.Exclusive {
		fmt.Fprintf(&b, "| %.1f%% | %s |\n", 100*float64(ex[i])/float64(total), c.Name)
	}
	b.WriteString("\nInclusive (a sample counts in every part on its stack; shares overlap):\n\n| share | part |\n|---|---|\n")
	for _, c := range ps.Inclusive {
		var d time.Duration
		for _, s := range samples {
			if slices.ContainsFunc(s.Frames, c.Re.MatchString) {
				d += s.CPU
			}
		}
		fmt.Fprintf(&b, "| %.1f%% | %s |\n", 100*float64(d)/float64(total), c.Name)
	}
	args := append(append([]string{"tool", "pprof"}, ps.Top...), exe, path)
	if top, err := exec.Command("go", args...).Output(); err == nil {
		b.WriteString("\n" + ps.TopTitle + "\n\n```\n")
		for _, l := range strings.Split(strings.TrimSpace(string(top)), "\n") {
			if slices.ContainsFunc(ps.TopOmit, func(p string) bool { return strings.HasPrefix(l, p) }) {
				continue
			}
			b.WriteString(l + "\n")
		}
		b.WriteString("```\n")
	}
	return b.String()
}

// TraceSample is one stack of a CPU profile, leaf first.
type TraceSample struct {
	CPU    time.Duration
	Frames []string
}

// ParseTraces reads `go tool pprof -traces`: blocks separated by dashed
// lines, each a value and the leaf frame, then one caller per line.
func ParseTraces(s string) []TraceSample {
	var out []TraceSample
	var cur *TraceSample
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "-----------+") {
			cur = nil
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasSuffix(f[0], ":") {
			continue
		}
		if cur == nil {
			d, err := time.ParseDuration(f[0])
			if err != nil || len(f) < 2 {
				continue
			}
			out = append(out, TraceSample{CPU: d, Frames: []string{f[1]}})
			cur = &out[len(out)-1]
			continue
		}
		cur.Frames = append(cur.Frames, f[0])
	}
	return out
}
