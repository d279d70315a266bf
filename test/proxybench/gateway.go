package main

import (
	"flag"
	"log/slog"

	"github.com/meridian-gw/meridian/gateway"
	"github.com/meridian-gw/meridian/internal/serving"
	"github.com/meridian-gw/meridian/test/benchkit"
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
	var prof benchkit.Profiled
	prof.RegisterFlags(fs)
	_ = fs.Parse(args)

	g, err := gateway.New(gateway.Options{
		ServiceConfig: *svc, Backend: *backend, Descriptor: *desc, SSLAddr: *ssl, CertDir: *certs,
		Registry: serving.NewRegistry(), Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	return prof.Run(g.Run)
}
