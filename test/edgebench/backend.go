package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/meridian-gw/meridian/internal/h2mux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// bytesCodec moves message bytes as they are: the backend echoes the
// request without decoding it, and the load generator sends a pre-encoded
// request and compares the bytes it gets back.
type bytesCodec struct{}

var _ encoding.CodecV2 = bytesCodec{}

func (bytesCodec) Name() string { return "proto" }

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("bytesCodec: %T is not *[]byte", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("bytesCodec: %T is not *[]byte", v)
	}
	*b = data.Materialize()
	return nil
}

// echoDesc is bench.Echo with its one unary method.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "bench.Echo",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var b []byte
			if err := dec(&b); err != nil {
				return nil, err
			}
			return &b, nil
		},
	}},
}

// backend stands in for a cluster's gateway: TLS, ALPN h2 (and
// http/1.1), native gRPC on grpc-go's transport with its defaults, and
// GET /v1/health answering 200 over HTTPS — what the seed's BackendConfig
// health check (type HTTPS, requestPath /v1/health) asks for. It is the
// same demultiplexer (internal/h2mux) the real gateway and the edge use.
type backend struct {
	mux *h2mux.Server
	ln  net.Listener
}

func startBackend(addr, certDir string) (*backend, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(bytesCodec{}))
	gs.RegisterService(&echoDesc, struct{}{})
	hm := http.NewServeMux()
	hm.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"status":"SERVING"}`) })
	m := &h2mux.Server{GRPC: gs, HTTP: &http.Server{Handler: hm, ReadHeaderTimeout: 5 * time.Second},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12}}
	go m.ServeTLS(context.Background(), ln)
	return &backend{mux: m, ln: ln}, nil
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
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-time.After(*life):
	}
	b.stop()
	return nil
}
