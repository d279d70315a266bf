package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/meridian-gw/meridian/test/benchkit"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
)

// frame is one message as received; frameCodec passes it through. Unlike
// internal/rawgrpc today, Marshal takes its own reference, so the sender
// frees its frame after SendMsg without freeing a pooled buffer twice.
type frame struct{ data mem.BufferSlice }

type frameCodec struct{}

var _ encoding.CodecV2 = frameCodec{}

func (frameCodec) Name() string { return "proto" }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, errors.New("frameCodec: not a *frame")
	}
	f.data.Ref()
	return f.data, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return errors.New("frameCodec: not a *frame")
	}
	data.Ref()
	f.data = data
	return nil
}

var bidi = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// floorCmd is the least a gRPC pass-through on the edge's stack can do: the
// same TLS front (internal/h2mux, grpc-go server), one shared grpc-go
// client connection over TLS to the backend (CA-verified), metadata passed
// on, one goroutine per call for the client→backend direction. No routing,
// health, retries, buffering or metrics: what is left is the floor any
// design on grpc-go pays, to read the edge's numbers against.
func floorCmd(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "serving address")
	backend := fs.String("backend", "", "backend host:port (TLS)")
	certs := fs.String("certs", "", "directory with tls.crt/tls.key")
	caPath := fs.String("ca", "", "PEM CA for the backend")
	life := fs.Duration("max_lifetime", 10*time.Minute, "stop by itself after this long")
	_ = fs.Parse(args)
	pem, err := os.ReadFile(*caPath)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	host, _, _ := net.SplitHostPort(*backend)
	cc, err := grpc.NewClient(*backend, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: host})))
	if err != nil {
		return err
	}
	defer cc.Close()
	handler := func(_ any, ss grpc.ServerStream) error {
		ctx := ss.Context()
		method, _ := grpc.MethodFromServerStream(ss)
		md, _ := metadata.FromIncomingContext(ctx)
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
		defer cancel()
		cs, err := cc.NewStream(ctx, bidi, method, grpc.ForceCodecV2(frameCodec{}))
		if err != nil {
			return err
		}
		go func() {
			for {
				f := &frame{}
				if err := ss.RecvMsg(f); err != nil {
					if errors.Is(err, io.EOF) {
						_ = cs.CloseSend()
					}
					return
				}
				err := cs.SendMsg(f)
				f.data.Free()
				if err != nil {
					return
				}
			}
		}()
		hdr, err := cs.Header()
		if err == nil {
			err = ss.SendHeader(hdr)
		}
		for err == nil {
			f := &frame{}
			if err = cs.RecvMsg(f); err != nil {
				break
			}
			err = ss.SendMsg(f)
			f.data.Free()
		}
		ss.SetTrailer(cs.Trailer())
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(handler), grpc.ForceServerCodecV2(frameCodec{}))
	m, err := newTLSMux(*certs, gs, http.NotFoundHandler())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	go m.ServeTLS(context.Background(), ln)
	_ = benchkit.AwaitStop(*life, nil)
	ln.Close()
	m.Shutdown(time.Second)
	return nil
}
