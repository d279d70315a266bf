package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
)

func main() {
	benchkit.Main("edgebench",
		benchkit.Command{Name: "run", Run: runCmd},
		benchkit.Command{Name: "backend", Run: backendCmd},
		benchkit.Command{Name: "edge", Run: edgeCmd},
		benchkit.Command{Name: "floor", Run: floorCmd})
}

func runCmd(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	meridian := fs.String("meridian", "bin/meridian", "the meridian binary (make build)")
	out := fs.String("out", "", "directory for results, logs and profiles (default: a new temporary one)")
	parts := fs.String("parts", "overhead,failover", "what to run: overhead, failover or both")
	rounds := fs.Int("rounds", 3, "overhead: rounds over all configurations (the table shows medians)")
	warm := fs.Duration("warm", 2*time.Second, "overhead: warm-up before each measured window")
	measure := fs.Duration("measure", 5*time.Second, "overhead: measured window")
	concs := fs.String("conc", "1,50", "overhead: concurrencies")
	size := fs.Int("size", 1024, "overhead: payload bytes in each request and response")
	profile := fs.Bool("profile", true, "overhead: CPU profile of the in-process edge at the highest concurrency")
	serverCPU := fs.Int("server_cpu", 1, "overhead: core for the backend and the proxies")
	clientCPU := fs.Int("client_cpu", 0, "overhead: core this program is pinned to (by the caller: taskset)")
	only := fs.String("only", "", "overhead: comma-separated configurations (direct, edge, haproxy); default all")
	edgeEnv := fs.String("edge_env", "", "overhead: space-separated KEY=VALUE settings for the edge process only, e.g. GOGC=400")
	variants := fs.String("variants", "", "overhead: more edges to measure, space-separated NAME=BINARY[@KEY=VALUE...] (configuration edge-NAME)")
	kills := fs.Int("kills", 10, "failover: how many times to kill us-central1")
	rate := fs.Int("rate", 200, "failover: requests per second through the edge")
	down := fs.Duration("down", 2*time.Second, "failover: how long the region stays dead after the edge marked it unhealthy")
	between := fs.Duration("between", 3*time.Second, "failover: steady traffic before each kill")
	deadline := fs.Duration("failover_deadline", 6*time.Minute, "failover: stop the drill after this long")
	_ = fs.Parse(args)
	cs, err := benchkit.ParseConcs(*concs)
	if err != nil {
		return err
	}
	if *meridian, err = filepath.Abs(*meridian); err != nil {
		return err
	}
	r, err := newRunner(*meridian, *out, *serverCPU, *clientCPU)
	if err != nil {
		return err
	}
	r.edgeEnv = strings.Fields(*edgeEnv)
	defer r.StopAll()
	r.StopOnSignal()
	var report strings.Builder
	fmt.Fprintf(&report, "Machine:\n\n%s\n", machine(*meridian))
	want := map[string]bool{}
	for _, p := range strings.Split(*parts, ",") {
		want[strings.TrimSpace(p)] = true
	}
	if want["overhead"] {
		vs, err := parseVariants(*variants)
		if err != nil {
			return err
		}
		var names []string
		if *only != "" {
			names = strings.Split(*only, ",")
		}
		res, err := r.overhead(overheadOpts{only: names, variants: vs, rounds: *rounds, warm: *warm, measure: *measure, concs: cs, size: *size,
			profile: *profile, profileMeasure: 8 * time.Second})
		if err != nil {
			return fmt.Errorf("overhead: %w", err)
		}
		r.StopAll()
		report.WriteString(res.report(*meridian) + "\n")
	}
	if want["failover"] {
		res := r.failover(failoverOpts{kills: *kills, rate: *rate, down: *down, between: *between, deadline: *deadline})
		report.WriteString(res.report())
	}
	_ = os.WriteFile(filepath.Join(r.Out, "report.md"), []byte(report.String()), 0o644)
	fmt.Print(report.String())
	r.Logf("report in %s", filepath.Join(r.Out, "report.md"))
	return nil
}
