package gateway

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// handleGRPC is the gRPC server's UnknownServiceHandler: it authenticates
// the call by the service config and pipes it to the backend.
func (g *Gateway) handleGRPC(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	st := g.state.Load()
	rec := &callRecord{protocol: "grpc", method: method, start: start}
	err := g.proxyGRPC(ctx, st, method, ss, rec)
	rec.code = status.Code(err)
	g.finish(ctx, rec)
	return err
}

func (g *Gateway) proxyGRPC(ctx context.Context, st *state, method string, ss grpc.ServerStream, rec *callRecord) error {
	selector, ok := st.selectorForPath(method)
	if !ok {
		return status.Error(codes.Unimplemented, msgNotDefined)
	}
	rec.selector = selector
	if selector == healthCheck && g.draining.Load() {
		return drainingHealth(ss)
	}
	pol := st.policy(selector)
	md, _ := metadata.FromIncomingContext(ctx)
	id, err := st.authenticate(ctx, pol, mdSource(md))
	if err != nil {
		return g.authFailed(rec, err)
	}
	rec.consumer = id.quotaKey()
	if ok, wait, limit := st.quotas.take(id.quotaKey(), pol.costs); !ok {
		_ = ss.SetHeader(metadata.Pairs("retry-after", retryAfter(wait)))
		return status.Errorf(codes.ResourceExhausted, "Quota exceeded for quota metric %q: retry in %s", limit, retryAfter(wait)+"s")
	}
	out := backendMetadata(ctx, md, id)
	bctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := g.backend.NewStream(bctx, rawgrpc.StreamDesc, method, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if err != nil {
		g.metrics.backendError(selector)
		return backendErr(err)
	}
	if st.unary[method] {
		// One request: relay it here, without the goroutine a stream needs.
		f := &rawgrpc.Frame{}
		switch err := ss.RecvMsg(f); {
		case err == nil:
			rec.bytesIn.Add(int64(f.Data.Len()))
			if cs.SendMsg(f) == nil { // else the backend ended the call; RecvMsg below reports why
				_ = cs.CloseSend()
			}
			f.Data.Free()
		case errors.Is(err, io.EOF):
			_ = cs.CloseSend()
		default:
			return err
		}
	} else {
		go g.pumpToBackend(ss, cs, cancel, rec)
	}
	return g.pumpToClient(ss, cs, rec, selector)
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

func (g *Gateway) authFailed(rec *callRecord, err error) error {
	var ae *auth.Error
	if errors.As(err, &ae) {
		rec.authReason = ae.Reason
		g.metrics.authFailure(ae.Reason)
		return status.Error(ae.Code, ae.Message)
	}
	return status.Errorf(codes.Internal, "authentication: %v", err)
}

func retryAfter(d time.Duration) string {
	s := int(d.Seconds() + 0.999)
	if s < 1 {
		s = 1
	}
	return itoa(s)
}

// hopHeaders never go to the backend: transport-level, or ours to set.
var hopHeaders = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
	"te": true, "host": true, "content-length": true, "content-type": true, "accept-encoding": true,
	"grpc-timeout": true, "grpc-encoding": true, "grpc-accept-encoding": true, "user-agent": true,
}

// backendMetadata is what the backend receives: the caller's metadata
// without any X-Endpoint-* header a client sent, plus the verified
// identity and X-Forwarded-For. It edits md, which must be the caller's
// own copy (metadata.FromIncomingContext returns one).
func backendMetadata(ctx context.Context, md metadata.MD, id *identity) metadata.MD {
	prior := md["x-forwarded-for"]
	for k := range md {
		if hopHeaders[k] || strings.HasPrefix(k, ":") || strings.HasPrefix(k, "x-endpoint-") {
			delete(md, k)
		}
	}
	if id.claims != nil {
		md[userInfoKey] = []string{id.claims.UserInfo}
	}
	if p, ok := peer.FromContext(ctx); ok {
		host := p.Addr.String()
		if i := strings.LastIndexByte(host, ':'); i > 0 {
			host = strings.Trim(host[:i], "[]")
		}
		if len(prior) > 0 {
			host = strings.Join(prior, ", ") + ", " + host
		}
		md["x-forwarded-for"] = []string{host}
	}
	return md
}

// userInfoKey is UserInfoHeader as a metadata key.
var userInfoKey = strings.ToLower(UserInfoHeader)

// mdSource reads credentials from gRPC metadata (no query string).
type mdSource metadata.MD

func (m mdSource) header(name string) string {
	if v := metadata.MD(m).Get(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m mdSource) query(string) string { return "" }
