package main

import (
	"errors"
	"flag"
	"net"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
	"google.golang.org/grpc"
)

// backendCmd serves bench.Echo (benchkit.NewEchoServer: grpc-go's
// defaults, h2c) until SIGTERM or -max_lifetime.
func backendCmd(args []string) error {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback)")
	life := fs.Duration("max_lifetime", 30*time.Minute, "stop by itself after this long")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	s := benchkit.NewEchoServer()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	if err := benchkit.AwaitStop(*life, done); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	s.Stop()
	return nil
}
