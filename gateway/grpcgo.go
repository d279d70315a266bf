package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// handleGRPC is the grpc-go server's UnknownServiceHandler. It serves
// native gRPC only on HTTP/2 connections whose first request was not
// gRPC (REST first, then gRPC on the same connection), which net/http
// serves; the relay serves all the others.
func (g *Gateway) handleGRPC(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	st := g.state.Load()
	rec := &callRecord{protocol: "grpc", method: method, start: start}
	err := g.proxyGRPC(ctx, st, method, ss, rec)
	rec.code = status.Code(err)
	md, _ := metadata.FromIncomingContext(ctx)
	g.finish(rec, first(md.Get("traceparent")))
	return err
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (g *Gateway) proxyGRPC(ctx context.Context, st *state, method string, ss grpc.ServerStream, rec *callRecord) error {
	md, _ := metadata.FromIncomingContext(ctx)
	d, r := g.decidePath(ctx, st, method, mdSource(md), rec)
	if r != nil {
		if r.retryAfter != "" {
			_ = ss.SetHeader(metadata.Pairs("retry-after", r.retryAfter))
		}
		return r.status.Err()
	}
	if d.notServing {
		return drainingHealth(ss)
	}
	var remote net.Addr
	if p, ok := peer.FromContext(ctx); ok {
		remote = p.Addr
	}
	conn, out := g.backend, backendMetadata(md, d.id, remote)
	if d.local {
		conn, out[localKeyHeader] = g.local.conn, []string{g.local.key}
	}
	bctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := conn.NewStream(bctx, rawgrpc.StreamDesc, method, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if err != nil {
		g.metrics.backendError(d.selector)
		return backendErr(err)
	}
	go g.pumpToBackend(ss, cs, cancel, rec)
	return g.pumpToClient(ss, cs, rec, d.selector)
}

// pumpToBackend relays a stream's requests until the client half-closes.
func (g *Gateway) pumpToBackend(ss grpc.ServerStream, cs grpc.ClientStream, cancel context.CancelFunc, rec *callRecord) {
	for {
		f := &rawgrpc.Frame{}
		if err := ss.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				_ = cs.CloseSend()
			} else {
				cancel()
			}
			return
		}
		rec.bytesIn.Add(int64(f.Data.Len()))
		err := cs.SendMsg(f)
		f.Data.Free()
		if err != nil { // the backend ended the call; pumpToClient reports why
			return
		}
	}
}

// pumpToClient relays the backend's header, responses and trailer.
func (g *Gateway) pumpToClient(ss grpc.ServerStream, cs grpc.ClientStream, rec *callRecord, selector string) error {
	hdr, err := cs.Header()
	if err == nil {
		err = ss.SendHeader(hdr)
	}
	for err == nil {
		f := &rawgrpc.Frame{}
		if err = cs.RecvMsg(f); err != nil {
			break
		}
		rec.bytesOut.Add(int64(f.Data.Len()))
		err = ss.SendMsg(f)
		f.Data.Free()
	}
	ss.SetTrailer(cs.Trailer())
	if errors.Is(err, io.EOF) {
		return nil
	}
	if _, ok := status.FromError(err); !ok || status.Code(err) == codes.Unavailable {
		g.metrics.backendError(selector)
	}
	return err
}

func backendErr(err error) error {
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Errorf(codes.Unavailable, "backend unavailable: %v", err)
}

// mdSource reads credentials from gRPC metadata (no query string).
type mdSource metadata.MD

func (m mdSource) header(name string) string {
	if v := metadata.MD(m).Get(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m mdSource) query(string) string { return "" }
