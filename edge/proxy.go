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
	cr.attach(actx, cs)
	defer cr.detach(cs)
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
		cr.detach(cs)
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

// clientReader reads the client's messages once, on one goroutine, and
// sends each to the current attempt's stream as it arrives; it keeps them
// (up to a limit) so that a retry can replay them.
type clientReader struct {
	ss    grpc.ServerStream
	limit int

	mu    sync.Mutex
	msgs  [][]byte
	base  int // absolute index of msgs[0]
	size  int
	over  bool
	first []byte
	done  bool
	err   error
	sent  int               // highest index forwarded to an attempt
	sink  grpc.ClientStream // the attempt new messages go to; nil while none or replaying
}

func newClientReader(ss grpc.ServerStream, limit int) *clientReader {
	return &clientReader{ss: ss, limit: limit}
}

func (c *clientReader) run() {
	for {
		f := &rawgrpc.Frame{}
		err := c.ss.RecvMsg(f)
		c.mu.Lock()
		if err != nil {
			c.done, c.err = true, err
			sink := c.sink
			c.mu.Unlock()
			if sink != nil && errors.Is(err, io.EOF) {
				_ = sink.CloseSend()
			}
			return
		}
		b := f.Data.Materialize()
		f.Data.Free()
		if c.first == nil {
			c.first = b
		}
		c.msgs = append(c.msgs, b)
		idx := c.base + len(c.msgs) - 1
		c.size += len(b)
		if c.size > c.limit {
			c.over = true
		}
		sink := c.sink
		c.mu.Unlock()
		if sink == nil {
			continue // no attempt yet, or a replay that will pick it up
		}
		serr := sink.SendMsg(rawgrpc.FrameOf(b))
		c.mu.Lock()
		if serr != nil {
			if c.sink == sink {
				c.sink = nil // the backend ended the call; RecvMsg on it says why
			}
		} else {
			c.sent = max(c.sent, idx+1)
		}
		c.trim()
		c.mu.Unlock()
	}
}

// trim drops forwarded messages once over the retry buffer limit (c.mu held).
func (c *clientReader) trim() {
	if c.over && c.sent > c.base {
		drop := c.sent - c.base
		c.msgs = c.msgs[drop:]
		c.base += drop
	}
}

func (c *clientReader) overflowed() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.over }
func (c *clientReader) firstMsg() []byte { c.mu.Lock(); defer c.mu.Unlock(); return c.first }

// attach makes cs the attempt the client's messages go to. With nothing
// received yet (a first attempt, the common case) the reader sends to it
// directly; otherwise a goroutine replays what is buffered first and then
// hands over to the reader.
func (c *clientReader) attach(ctx context.Context, cs grpc.ClientStream) {
	c.mu.Lock()
	if c.base+len(c.msgs) == 0 && !c.done {
		c.sink = cs
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	go c.replay(ctx, cs)
}

// detach stops sending to cs (its attempt is over).
func (c *clientReader) detach(cs grpc.ClientStream) {
	c.mu.Lock()
	if c.sink == cs {
		c.sink = nil
	}
	c.mu.Unlock()
}

// replay sends every buffered message, then half-closes if the client has,
// or else hands cs to the reader for the messages still to come.
func (c *clientReader) replay(ctx context.Context, cs grpc.ClientStream) {
	for i := 0; ctx.Err() == nil; {
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
		c.sink = cs // caught up: the reader sends the rest
		c.mu.Unlock()
		return
	}
}

// hop headers are the transport's, not the caller's.
var hopHeaders = map[string]bool{"connection": true, "keep-alive": true, "te": true, "transfer-encoding": true, "upgrade": true,
	"content-length": true, "content-type": true, "grpc-timeout": true, "grpc-encoding": true, "grpc-accept-encoding": true,
	"user-agent": true, "host": true}

// forwardMetadata keeps the caller's metadata (Authorization included),
// adds X-Forwarded-For/-Proto and the BackendConfig's custom headers. It
// edits md, which must be the caller's own copy (metadata.FromIncomingContext
// returns one).
func forwardMetadata(ctx context.Context, md metadata.MD, custom [][2]string) metadata.MD {
	prior := md["x-forwarded-for"]
	for k := range md {
		if hopHeaders[k] || strings.HasPrefix(k, ":") {
			delete(md, k)
		}
	}
	if ip := clientIP(ctx); ip != "" {
		if len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		md["x-forwarded-for"] = []string{ip}
	}
	md["x-forwarded-proto"] = []string{"https"}
	for _, h := range custom {
		md.Set(strings.ToLower(h[0]), h[1])
	}
	return md
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
