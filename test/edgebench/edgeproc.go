package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/internal/serving"
)

// edgeCmd runs the edge in this process with the options `meridian edge`
// builds from its flags (warn-level logging discarded, admin off), and
// takes a CPU profile between SIGUSR1 and SIGUSR2 (and, at SIGUSR2, an
// allocation profile beside it).
func edgeCmd(args []string) error {
	fs := flag.NewFlagSet("edge", flag.ExitOnError)
	cfg := fs.String("config", "", "edge config directory")
	listen := fs.String("listen", "127.0.0.1:0", "serving address")
	certs := fs.String("certs", "", "directory with tls.crt/tls.key")
	ca := fs.String("ca", "", "PEM CA for the upstream")
	prof := fs.String("cpuprofile", "", "write the CPU profile taken between SIGUSR1 and SIGUSR2 here")
	life := fs.Duration("max_lifetime", 5*time.Minute, "stop by itself after this long")
	_ = fs.Parse(args)
	ed, err := edge.New(edge.Options{Config: *cfg, Region: "us-central1", Listen: *listen, CertDir: *certs, UpstreamCA: *ca,
		Registry: serving.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *life)
	defer cancel()
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		var out *os.File
		for s := range sig {
			switch s {
			case syscall.SIGUSR1:
				if *prof == "" || out != nil {
					continue
				}
				f, err := os.Create(*prof)
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
				if f, err := os.Create(strings.TrimSuffix(*prof, ".cpu.pprof") + ".allocs.pprof"); err == nil {
					_ = pprof.Lookup("allocs").WriteTo(f, 0)
					f.Close()
				}
				_ = os.WriteFile(*prof+".done", nil, 0o644)
			default:
				cancel()
				return
			}
		}
	}()
	return ed.Run(ctx)
}
