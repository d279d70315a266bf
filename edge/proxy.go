package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// fastReconnect: a gateway that comes back is reconnected within about a
// second, and a dead one fails fast instead of hanging on connect.
var fastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}

// handleGRPC proxies any gRPC call to a cluster, retrying on another
// endpoint (or region) what never reached a backend, and what is safe to
// repeat, as long as nothing was sent to the client yet.
func (ed *Edge) handleGRPC(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	md, _ := metadata.FromIncomingContext(ctx)
	gen := ed.gen.Load()
	p := gen.route(first(md, ":authority"), method)
	if p == nil {
		return status.Errorf(codes.Unimplemented, "no backend for %s", method)
	}
	ed.budget.active.Add(1)
	defer ed.budget.active.Add(-1)
	out := forwardMetadata(ctx, md, p.settings.headers)
	aff := ""
	if p.settings.affinity == "CLIENT_IP" {
		aff = clientIP(ctx)
	}
	cr := newClientReader(ss, ed.opts.RetryBufferLimit)
	go cr.run()
	tried := map[*endpoint]bool{}
	var lastErr error
	for attempt := 1; ; attempt++ {
		e, failover := p.pick(tried, aff)
		if e == nil {
			if lastErr == nil {
				lastErr = status.Error(codes.Unavailable, "no healthy endpoint in any region")
			}
			ed.served(p.name, "", "", status.Code(lastErr).String(), time.Since(start))
			return lastErr
		}
		tried[e] = true
		res := ed.attemptGRPC(ctx, e, method, out, cr, ss)
		if res.committed || res.err == nil {
			code := status.Code(res.err).String()
			ed.served(p.name, e.cluster, e.region, code, time.Since(start))
			if failover {
				ed.metrics.failovers.WithLabelValues(e.region).Inc()
			}
			return res.err
		}
		lastErr = res.err
		e.recordError(status.Convert(res.err).Message())
		if res.eject && e.eject(time.Now()) {
			ed.metrics.ejections.WithLabelValues(e.cluster).Inc()
			ed.event(Event{Kind: "ejected", Endpoint: e.id, Region: e.region, Detail: status.Convert(res.err).Message()})
		}
		retry := attempt < ed.opts.MaxAttempts && !cr.overflowed() && (!res.reached || ed.idem.grpcOK(method, cr.firstMsg()))
		if !retry || !ed.budget.tryRetry() {
			ed.served(p.name, e.cluster, e.region, status.Code(res.err).String(), time.Since(start))
			return res.err
		}
		ed.metrics.retries.WithLabelValues(p.name, reason(res)).Inc()
		ed.budget.doneRetry()
	}
}

func reason(r attemptResult) string {
	if !r.reached {
		return "not_reached"
	}
	return strings.ToLower(status.Code(r.err).String())
}

type attemptResult struct {
	err       error
	committed bool // something reached the client: no retry
	reached   bool // the request may have reached a backend
	eject     bool
}

func (ed *Edge) attemptGRPC(ctx context.Context, e *endpoint, method string, out metadata.MD, cr *clientReader, ss grpc.ServerStream) attemptResult {
	e.inflight.Add(1)
	defer e.inflight.Add(-1)
	e.requests.Add(1)
	actx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, out))
	defer cancel()
	wasReady := e.conn.GetState() == connectivity.Ready
	cs, err := e.conn.NewStream(actx, rawgrpc.StreamDesc, method, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if err != nil {
		return attemptResult{err: err, reached: false, eject: true}
	}
	fwd := make(chan struct{})
	go func() { defer close(fwd); cr.forward(actx, cs) }()
	hdr, err := cs.Header()
	var firstMsg *rawgrpc.Frame
	if err == nil {
		// Hold the headers until the first message or the end, so that a
		// trailers-only UNAVAILABLE can still be retried elsewhere.
		firstMsg = &rawgrpc.Frame{}
		if err = cs.RecvMsg(firstMsg); err != nil {
			firstMsg = nil
		}
	}
	if err != nil && !errors.Is(err, io.EOF) && firstMsg == nil && retryableStatus(err) {
		cancel()
		<-fwd
		reached := !neverReached(err, wasReady)
		return attemptResult{err: err, reached: reached, eject: true}
	}
	// Committed: relay to the client.
	if hdr != nil {
		if err := ss.SendHeader(hdr); err != nil {
			return attemptResult{err: err, committed: true}
		}
	}
	if firstMsg != nil {
		err = ss.SendMsg(firstMsg)
		firstMsg.Data.Free()
		for err == nil {
			f := &rawgrpc.Frame{}
			if err = cs.RecvMsg(f); err != nil {
				break
			}
			err = ss.SendMsg(f)
			f.Data.Free()
		}
	}
	ss.SetTrailer(cs.Trailer())
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return attemptResult{err: err, committed: true}
}

// retryableStatus: what may be retried elsewhere when it came before any
// response: UNAVAILABLE, and streams reset by the peer.
func retryableStatus(err error) bool {
	s := status.Convert(err)
	switch s.Code() {
	case codes.Unavailable:
		return true
	case codes.Internal:
		return strings.Contains(s.Message(), "RST_STREAM") || strings.Contains(s.Message(), "stream terminated")
	}
	return false
}

// neverReached reports a failure that happened before the request could
// reach the backend: no connection, refused, or no server preface.
func neverReached(err error, wasReady bool) bool {
	if status.Code(err) != codes.Unavailable {
		return false
	}
	m := status.Convert(err).Message()
	for _, s := range []string{"while dialing", "connection refused", "server preface", "no such host"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return !wasReady && strings.Contains(m, "connection error")
}

// clientReader reads the client's messages once and replays them to each
// attempt; it keeps them (up to a limit) for retries.
type clientReader struct {
	ss    grpc.ServerStream
	limit int

	mu      sync.Mutex
	msgs    [][]byte
	base    int // absolute index of msgs[0]
	size    int
	over    bool
	first   []byte
	done    bool
	err     error
	sent    int // highest index forwarded by the current attempt
	changed chan struct{}
}

func newClientReader(ss grpc.ServerStream, limit int) *clientReader {
	return &clientReader{ss: ss, limit: limit, changed: make(chan struct{})}
}

func (c *clientReader) run() {
	for {
		f := &rawgrpc.Frame{}
		err := c.ss.RecvMsg(f)
		c.mu.Lock()
		if err != nil {
			c.done, c.err = true, err
		} else {
			b := f.Data.Materialize()
			f.Data.Free()
			if c.first == nil {
				c.first = b
			}
			c.msgs = append(c.msgs, b)
			c.size += len(b)
			if c.size > c.limit {
				c.over = true
			}
			if c.over && c.sent > c.base { // kept only until forwarded
				drop := c.sent - c.base
				c.msgs = c.msgs[drop:]
				c.base += drop
			}
		}
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (c *clientReader) overflowed() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.over }
func (c *clientReader) firstMsg() []byte { c.mu.Lock(); defer c.mu.Unlock(); return c.first }

// forward sends every message, buffered and new, then half-closes when the
// client has.
func (c *clientReader) forward(ctx context.Context, cs grpc.ClientStream) {
	for i := 0; ; {
		c.mu.Lock()
		if i < c.base { // trimmed before this attempt could send it
			c.mu.Unlock()
			return
		}
		if i < c.base+len(c.msgs) {
			m := c.msgs[i-c.base]
			c.mu.Unlock()
			if err := cs.SendMsg(rawgrpc.FrameOf(m)); err != nil {
				return
			}
			i++
			c.mu.Lock()
			c.sent = max(c.sent, i)
			c.mu.Unlock()
			continue
		}
		if c.done {
			clean := errors.Is(c.err, io.EOF)
			c.mu.Unlock()
			if clean {
				_ = cs.CloseSend()
			}
			return
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// hop headers are the transport's, not the caller's.
var hopHeaders = map[string]bool{"connection": true, "keep-alive": true, "te": true, "transfer-encoding": true, "upgrade": true,
	"content-length": true, "content-type": true, "grpc-timeout": true, "grpc-encoding": true, "grpc-accept-encoding": true,
	"user-agent": true, "host": true}

// forwardMetadata keeps the caller's metadata (Authorization included),
// adds X-Forwarded-For/-Proto and the BackendConfig's custom headers.
func forwardMetadata(ctx context.Context, in metadata.MD, custom [][2]string) metadata.MD {
	out := metadata.MD{}
	for k, v := range in {
		if !hopHeaders[k] && !strings.HasPrefix(k, ":") {
			out[k] = v
		}
	}
	if ip := clientIP(ctx); ip != "" {
		if prior := in.Get("x-forwarded-for"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out.Set("x-forwarded-for", ip)
	}
	out.Set("x-forwarded-proto", "https")
	for _, h := range custom {
		out.Set(strings.ToLower(h[0]), h[1])
	}
	return out
}

func clientIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
