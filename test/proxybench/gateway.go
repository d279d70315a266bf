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

	"github.com/meridian-gw/meridian/gateway"
	"github.com/meridian-gw/meridian/internal/serving"
)

// gatewayCmd runs the gateway in this process, with the options
// `meridian gateway` builds from the flags run passes it (access log off,
// no status port), and takes a CPU profile between SIGUSR1 and SIGUSR2 (and, at SIGUSR2,
// an allocation profile beside it).
func gatewayCmd(args []string) error {
	fs := flag.NewFlagSet("gateway", flag.ExitOnError)
	ssl := fs.String("ssl", "", "TLS listen address")
	backend := fs.String("backend", "", "backend URL")
	svc := fs.String("service_config", "", "service config")
	desc := fs.String("descriptor", "", "FileDescriptorSet")
	certs := fs.String("certs", "", "directory with server.crt/server.key")
	prof := fs.String("cpuprofile", "", "write the CPU profile taken between SIGUSR1 and SIGUSR2 here")
	life := fs.Duration("max_lifetime", 5*time.Minute, "stop by itself after this long")
	_ = fs.Parse(args)

	g, err := gateway.New(gateway.Options{
		ServiceConfig: *svc, Backend: *backend, Descriptor: *desc, SSLAddr: *ssl, CertDir: *certs,
		Registry: serving.NewRegistry(), Log: slog.New(slog.DiscardHandler),
	})
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
				if out != nil {
					pprof.StopCPUProfile()
					out.Close()
					out = nil
					// Allocations since the start, for `go tool pprof -sample_index=alloc_space`.
					if f, err := os.Create(strings.TrimSuffix(*prof, ".cpu.pprof") + ".allocs.pprof"); err == nil {
						_ = pprof.Lookup("allocs").WriteTo(f, 0)
						f.Close()
					}
					// Tell the orchestrator the file is complete.
					_ = os.WriteFile(*prof+".done", nil, 0o644)
				}
			default:
				cancel()
				return
			}
		}
	}()
	return g.Run(ctx)
}
