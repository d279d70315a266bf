package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// relayHandler serves native gRPC on the frame relay: the service
// config decides each call on the connection's goroutine (a goroutine of
// its own only when a JWT needs keys fetched), then the relay forwards
// the call's frames to the backend as they come.
type relayHandler struct{ g *Gateway }

// relayCall is the gateway's state for one relayed call.
type relayCall struct {
	rec       callRecord
	forwarded bool
	// slow is 1 while a goroutine decides the call (a JWKS fetch), 2 if
	// the call ended meanwhile: the goroutine then records it.
	slow atomic.Int32
}

func (h relayHandler) ServeCall(c *h2relay.Call) {
	g := h.g
	st := g.state.Load()
	rc := &relayCall{rec: callRecord{protocol: "grpc", method: c.Path(), start: c.Start()}}
	c.UserData = rc
	selector, ok := st.selectorForPath(c.Path())
	if !ok {
		c.Reject(codes.Unimplemented, msgNotDefined)
		return
	}
	rc.rec.selector = selector
	if selector == healthCheck && g.draining.Load() {
		c.Respond(notServing)
		return
	}
	pol := st.policy(selector)
	src := callSource{c}
	id, err := st.authenticate(auth.WithoutFetch(context.Background()), pol, src)
	if errors.Is(err, auth.ErrWouldBlock) {
		rc.slow.Store(1)
		go func() {
			id, err := st.authenticate(context.Background(), pol, src)
			g.forwardCall(c, st, pol, rc, id, err)
			if !rc.slow.CompareAndSwap(1, 0) {
				g.callDone(c, rc)
			}
		}()
		return
	}
	g.forwardCall(c, st, pol, rc, id, err)
}

// AttemptFailed: there is one backend and no retry; the relay ends the
// call with the failure's status.
func (relayHandler) AttemptFailed(*h2relay.Call, h2relay.Failure) {}

func (h relayHandler) CallDone(c *h2relay.Call) {
	rc := c.UserData.(*relayCall)
	if rc.slow.CompareAndSwap(1, 2) {
		return // the deciding goroutine records it
	}
	h.g.callDone(c, rc)
}

func (g *Gateway) forwardCall(c *h2relay.Call, st *state, pol *policy, rc *relayCall, id *identity, err error) {
	wait, err := g.admit(st, pol, &rc.rec, id, err)
	if err != nil {
		s := status.Convert(err)
		if wait != "" {
			c.Reject(s.Code(), s.Message(), h2relay.HeaderField{Name: "retry-after", Value: wait})
		} else {
			c.Reject(s.Code(), s.Message())
		}
		return
	}
	rc.forwarded = true
	c.Forward(g.upstream, backendFields(c, id), h2relay.ForwardOptions{})
}

func (g *Gateway) callDone(c *h2relay.Call, rc *relayCall) {
	rec := &rc.rec
	rec.code, _ = c.Result()
	in, out := c.Bytes()
	rec.bytesIn.Store(in)
	rec.bytesOut.Store(out)
	if rc.forwarded && rec.code == codes.Unavailable {
		g.metrics.backendError(rec.selector)
	}
	g.finish(rec, c.Header("traceparent"))
}

// admit finishes what authenticate started: an authentication failure or
// an exhausted quota becomes the status to answer with (and, for quota,
// the Retry-After seconds).
func (g *Gateway) admit(st *state, pol *policy, rec *callRecord, id *identity, err error) (retry string, _ error) {
	if err != nil {
		return "", g.authFailed(rec, err)
	}
	rec.consumer = id.quotaKey()
	if ok, wait, limit := st.quotas.take(id.quotaKey(), pol.costs); !ok {
		ra := retryAfter(wait)
		return ra, status.Errorf(codes.ResourceExhausted, "Quota exceeded for quota metric %q: retry in %ss", limit, ra)
	}
	return "", nil
}

// backendFields are the request headers the backend receives: the
// caller's, without any X-Endpoint-* header a client sent, plus the
// verified identity and X-Forwarded-For.
func backendFields(c *h2relay.Call, id *identity) []h2relay.HeaderField {
	in := c.Headers()
	out := make([]h2relay.HeaderField, 0, len(in)+3)
	var prior []string
	for _, f := range in {
		switch {
		case strings.HasPrefix(f.Name, "x-endpoint-"):
		case f.Name == "x-forwarded-for":
			prior = append(prior, f.Value)
		default:
			out = append(out, f)
		}
	}
	if id.claims != nil {
		out = append(out, h2relay.HeaderField{Name: userInfoKey, Value: id.claims.UserInfo},
			h2relay.HeaderField{Name: ownerKey, Value: id.claims.Owner})
	}
	return append(out, h2relay.HeaderField{Name: "x-forwarded-for", Value: forwardedFor(prior, c.RemoteHost())})
}

// forwardedFor appends the client's host to the X-Forwarded-For values it
// sent.
func forwardedFor(prior []string, host string) string {
	if len(prior) > 0 {
		return strings.Join(prior, ", ") + ", " + host
	}
	return host
}

// callSource reads credentials from a relayed call's headers.
type callSource struct{ c *h2relay.Call }

func (s callSource) header(name string) string { return s.c.Header(strings.ToLower(name)) }
func (callSource) query(string) string         { return "" }

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
	if wait, err := g.admit(st, pol, rec, id, err); err != nil {
		if wait != "" {
			_ = ss.SetHeader(metadata.Pairs("retry-after", wait))
		}
		return err
	}
	out := backendMetadata(ctx, md, id)
	bctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	cs, err := g.backend.NewStream(bctx, rawgrpc.StreamDesc, method, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if err != nil {
		g.metrics.backendError(selector)
		return backendErr(err)
	}
	go g.pumpToBackend(ss, cs, cancel, rec)
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
		md[ownerKey] = []string{id.claims.Owner}
	}
	if p, ok := peer.FromContext(ctx); ok {
		host := p.Addr.String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		md["x-forwarded-for"] = []string{forwardedFor(prior, host)}
	}
	return md
}

// userInfoKey and ownerKey are UserInfoHeader and OwnerHeader as
// metadata keys.
var (
	userInfoKey = strings.ToLower(UserInfoHeader)
	ownerKey    = strings.ToLower(OwnerHeader)
)

// mdSource reads credentials from gRPC metadata (no query string).
type mdSource metadata.MD

func (m mdSource) header(name string) string {
	if v := metadata.MD(m).Get(name); len(v) > 0 {
		return v[0]
	}
	return ""
}

func (m mdSource) query(string) string { return "" }
