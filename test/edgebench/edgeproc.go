package main

import (
	"flag"
	"log/slog"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/test/benchkit"
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
	var prof benchkit.Profiled
	prof.RegisterFlags(fs)
	_ = fs.Parse(args)
	ed, err := edge.New(edge.Options{Config: *cfg, Region: "us-central1", Listen: *listen, CertDir: *certs, UpstreamCA: *ca,
		Registry: serving.NewRegistry(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	return prof.Run(ed.Run)
}
