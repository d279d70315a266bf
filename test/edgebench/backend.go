package main

import (
	"context"
	"crypto/tls"
	"flag"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/test/benchkit"
	"google.golang.org/grpc"
)

// backend stands in for a cluster's gateway: TLS, ALPN h2 (and
// http/1.1), native gRPC on grpc-go's transport with its defaults
// (benchkit.NewEchoServer), and GET /v1/health answering 200 over HTTPS —
// what the seed's BackendConfig health check (type HTTPS, requestPath
// /v1/health) asks for. It is the same demultiplexer (internal/h2mux) the
// real gateway and the edge use.
type backend struct {
	mux *h2mux.Server
	ln  net.Listener
}

func startBackend(addr, certDir string) (*backend, error) {
	hm := http.NewServeMux()
	hm.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"status":"SERVING"}`) })
	m, err := newTLSMux(certDir, benchkit.NewEchoServer(), hm)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go m.ServeTLS(context.Background(), ln)
	return &backend{mux: m, ln: ln}, nil
}

// newTLSMux serves gRPC with gs and the rest with h behind internal/h2mux:
// TLS (certDir's tls.crt and tls.key) with ALPN h2 and http/1.1.
func newTLSMux(certDir string, gs *grpc.Server, h http.Handler) (*h2mux.Server, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		return nil, err
	}
	return &h2mux.Server{GRPC: gs, HTTP: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}}, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) stop() {
	b.ln.Close()
	b.mux.Shutdown(time.Second)
}

// backendCmd serves until SIGTERM or -max_lifetime.
func backendCmd(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback)")
	certs := fs.String("certs", "", "directory with tls.crt and tls.key")
	life := fs.Duration("max_lifetime", 30*time.Minute, "stop by itself after this long")
	_ = fs.Parse(args)
	b, err := startBackend(*addr, *certs)
	if err != nil {
		return err
	}
	_ = benchkit.AwaitStop(*life, nil)
	b.stop()
	return nil
}
