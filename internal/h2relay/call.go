package h2relay

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/grpcframe"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// Handler decides what happens to each call. Its methods run on the
// relay's connection goroutines and must not block: decide at once, or
// hand the call to a goroutine of its own that decides later (the request
// waits in the relay, within its flow-control window).
type Handler interface {
	// ServeCall is called once per new call. It must eventually call
	// Forward, Reject or Respond.
	ServeCall(c *Call)
	// AttemptFailed is called when an attempt failed before anything of
	// its response reached the client. Before it returns it may Forward
	// again (a retry) or Reject; if it does neither, the call ends with
	// f's status.
	AttemptFailed(c *Call, f Failure)
	// CallDone is called once, when the call has ended.
	CallDone(c *Call)
}

// Failure says why an attempt failed.
type Failure struct {
	Code    codes.Code
	Message string
	// Reached is false when the request provably never reached the
	// upstream's application: the connection failed before the
	// upstream's SETTINGS, REFUSED_STREAM, or a GOAWAY below the stream.
	// Such a request is safe to send anywhere.
	Reached bool
	// Reset is true when the upstream reset the stream (RST_STREAM).
	Reset bool
}

// ForwardOptions shape one call's forwarding; the first Forward's apply.
type ForwardOptions struct {
	// RetryBuffer keeps up to this many request bytes so that a failed
	// attempt can be replayed to another upstream. 0: no retries.
	RetryBuffer int
	// HoldHeaders holds the response headers until the first message or
	// the end of the response, so that a trailers-only UNAVAILABLE can
	// still be retried elsewhere.
	HoldHeaders bool
}

// Call is one gRPC call from a client, relayed to an upstream.
type Call struct {
	srv   *Server
	front *stream
	start time.Time
	hdrs  []hpack.HeaderField
	path  string
	auth  string

	// UserData is the handler's, for state of its own across callbacks.
	UserData any

	mu        sync.Mutex
	done      bool // decided: no more attempts
	finished  bool // CallDone was called
	opts      ForwardOptions
	up        *Upstream
	out       []hpack.HeaderField
	back      *stream // the attempt in progress
	lastBack  *stream // the attempt that answered
	queued    bool    // waiting for an upstream connection
	attempts  int
	committed bool // response headers went to the client
	held      []hpack.HeaderField
	code      codes.Code
	message   string

	req         []byte // request bytes not yet forwarded, or kept for a retry
	reqBase     int64  // request offset of req[0]
	reqLen      int64
	reqEnd      bool
	overflow    bool // more than RetryBuffer was sent: no retry
	reqCredited atomic.Int64
	msgLeft     int64 // request: bytes still to come of the current message (framing)
	prefix      int   // request: bytes of the current 5-byte message prefix seen
	prefixBuf   [5]byte
	respLen     int64
	resCredited atomic.Int64
}

// Path is the gRPC method path, "/package.Service/Method".
func (c *Call) Path() string { return c.path }

// Authority is the request's :authority.
func (c *Call) Authority() string { return c.auth }

// Headers are the request's header fields, pseudo-headers first. The
// slice is the call's: copy it before changing it.
func (c *Call) Headers() []hpack.HeaderField { return c.hdrs }

// Header returns the first value of a (lower-case) header.
func (c *Call) Header(name string) string {
	for _, f := range c.hdrs {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// RemoteAddr is the client's address.
func (c *Call) RemoteAddr() net.Addr { return c.front.c.nc.RemoteAddr() }

// RemoteHost is the client's IP address (RemoteAddr without the port),
// worked out once per connection.
func (c *Call) RemoteHost() string {
	x := c.front.c
	x.hostOnce.Do(func() {
		x.host = x.nc.RemoteAddr().String()
		if h, _, err := net.SplitHostPort(x.host); err == nil {
			x.host = h
		}
	})
	return x.host
}

// Start is when the call's headers arrived.
func (c *Call) Start() time.Time { return c.start }

// Result is the call's gRPC status once it is done.
func (c *Call) Result() (codes.Code, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.message
}

// Bytes returns the request and response payload bytes relayed.
func (c *Call) Bytes() (in, out int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reqLen, c.respLen
}

// Attempts is how many times the call was forwarded.
func (c *Call) Attempts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attempts
}

// Replayable reports whether the whole request so far is kept, so that
// another attempt can resend it.
func (c *Call) Replayable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.overflow && c.reqBase == 0
}

// FirstMessage returns the request's first gRPC message if it has fully
// arrived and is kept (see ForwardOptions.RetryBuffer), else nil.
func (c *Call) FirstMessage() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reqBase != 0 || len(c.req) < 5 {
		return nil
	}
	n := int(uint32(c.req[1])<<24 | uint32(c.req[2])<<16 | uint32(c.req[3])<<8 | uint32(c.req[4]))
	if len(c.req) < 5+n {
		return nil
	}
	return c.req[5 : 5+n]
}

// Forward sends the call to up with the given header fields (the relay
// sets :scheme for the upstream). After a failed attempt, Forward again
// replays the request, if Replayable.
func (c *Call) Forward(up *Upstream, fields []hpack.HeaderField, o ForwardOptions) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	if c.attempts == 0 {
		c.opts = o
		if o.RetryBuffer <= 0 || c.reqLen > int64(o.RetryBuffer) {
			c.overflow = true
		}
	} else if c.overflow || c.reqBase != 0 {
		c.mu.Unlock()
		c.Reject(codes.Unavailable, "upstream failed and the request is too large to retry")
		return
	}
	c.attempts++
	c.up, c.out, c.queued = up, fields, true
	c.mu.Unlock()
	up.submit(c)
}

// attach opens the call's attempt on upstream connection y, for which
// a stream slot was reserved. It reports false if y can no longer take it.
func (c *Call) attach(y *conn) bool {
	c.mu.Lock()
	if c.done || !c.queued {
		c.mu.Unlock()
		y.active.Add(-1)
		return true
	}
	y.mu.Lock()
	if y.closed || y.closing || y.goingAway || y.nextID > maxStreamID {
		y.mu.Unlock()
		c.mu.Unlock()
		y.active.Add(-1)
		return false
	}
	t := &stream{id: y.nextID, c: y, call: c, sendWin: y.peerInitWin, recvWin: int64(y.set.streamWindow)}
	y.nextID += 2
	y.streams[t.id] = t
	endOnHeaders := c.reqEnd && len(c.req) == 0
	y.encodeRequestHeadersLocked(t.id, c.out, c.up.scheme, endOnHeaders)
	if endOnHeaders {
		t.sentEnd = true
	} else if len(c.req) > 0 {
		t.sendDataLocked(c.req, c.reqEnd)
	}
	y.mu.Unlock()
	if c.overflow {
		c.req, c.reqBase = c.req[:0], c.reqLen
	}
	c.back, c.queued = t, false
	c.mu.Unlock()
	y.kick()
	c.creditRequest(t)
	return true
}

// onRequestData forwards client DATA to the attempt, or keeps it until
// there is one. It reports whether it refused the call (a message over
// the size limit), which the client's connection counts as a reset.
func (c *Call) onRequestData(p []byte, end bool) (refused bool) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		c.front.c.credit(c.front, int64(len(p)))
		return false
	}
	if msg := c.checkFraming(p); msg != "" {
		c.mu.Unlock()
		c.front.c.credit(c.front, int64(len(p)))
		c.reject(codes.ResourceExhausted, msg)
		return true
	}
	c.reqLen += int64(len(p))
	c.reqEnd = c.reqEnd || end
	t := c.back
	switch {
	case t == nil:
		c.req = append(c.req, p...)
	default:
		if !c.overflow {
			if c.reqLen > int64(c.opts.RetryBuffer) {
				c.overflow = true
				c.req, c.reqBase = c.req[:0], c.reqLen
			} else {
				c.req = append(c.req, p...)
			}
		} else {
			c.reqBase = c.reqLen
		}
		y := t.c
		y.mu.Lock()
		if !t.closed {
			t.sendDataLocked(p, end)
		}
		y.mu.Unlock()
		y.kick()
	}
	c.mu.Unlock()
	if t != nil {
		c.creditRequest(t)
	}
	return false
}

// checkFraming follows the request's gRPC message framing to enforce the
// server's message size limit. It returns why the request is refused.
func (c *Call) checkFraming(p []byte) string {
	limit := c.srv.MaxRecvMsgSize
	if limit <= 0 {
		return ""
	}
	for len(p) > 0 {
		if c.msgLeft > 0 {
			n := min(int64(len(p)), c.msgLeft)
			c.msgLeft -= n
			p = p[n:]
			continue
		}
		n := copy(c.prefixBuf[c.prefix:], p)
		c.prefix += n
		p = p[n:]
		if c.prefix < 5 {
			return ""
		}
		c.prefix = 0
		size := int64(grpcframe.Length(c.prefixBuf[:]))
		if size > int64(limit) {
			return "grpc: received message larger than max (" + strconv.FormatInt(size, 10) + " vs. " + strconv.Itoa(limit) + ")"
		}
		c.msgLeft = size
	}
	return ""
}

// creditRequest returns to the client the window of request bytes that
// attempt t has put on the wire (a replay re-sends bytes already credited).
func (c *Call) creditRequest(t *stream) {
	w := t.wired.Load()
	for {
		cr := c.reqCredited.Load()
		if w <= cr {
			return
		}
		if c.reqCredited.CompareAndSwap(cr, w) {
			c.front.c.credit(c.front, w-cr)
			return
		}
	}
}

// creditResponse returns to the upstream the window of response bytes
// written to the client.
func (c *Call) creditResponse(t *stream) {
	w := c.front.wired.Load()
	for {
		cr := c.resCredited.Load()
		if w <= cr {
			return
		}
		if c.resCredited.CompareAndSwap(cr, w) {
			t.c.credit(t, w-cr)
			return
		}
	}
}

// afterFlush runs when queued data of one of the call's streams left.
func (c *Call) afterFlush(s *stream) {
	if !s.front {
		c.creditRequest(s)
		return
	}
	c.mu.Lock()
	t := c.lastBack
	c.mu.Unlock()
	if t != nil {
		c.creditResponse(t)
	}
	x := s.c
	x.mu.Lock()
	closed := s.closed // the trailers went out
	x.mu.Unlock()
	if closed {
		c.finish()
	}
}

// onResponseHeaders relays (or, holding, keeps) an attempt's headers or
// trailers.
func (c *Call) onResponseHeaders(t *stream, fields []hpack.HeaderField, end bool) {
	c.mu.Lock()
	if c.done || c.back != t {
		c.mu.Unlock()
		t.c.resetAndRemove(t, http2.ErrCodeCancel)
		return
	}
	first := !t.gotHeaders
	t.gotHeaders = true
	if !validResponse(fields, first) {
		c.mu.Unlock()
		c.upstreamFailed(t, Failure{Code: codes.Internal, Message: "upstream sent a malformed header block (pseudo-headers: RFC 9113 §8.3.2)", Reached: true}, true)
		return
	}
	if first && !end {
		if code, ok := httpStatusCode(fields); !ok {
			c.mu.Unlock()
			c.upstreamFailed(t, Failure{Code: code, Message: "upstream answered HTTP " + statusOf(fields) + " without a gRPC status", Reached: true}, true)
			return
		}
		if c.opts.HoldHeaders && !c.committed {
			c.held = append(c.held[:0], fields...)
			c.mu.Unlock()
			return
		}
		c.commitLocked(fields)
		c.mu.Unlock()
		return
	}
	if !end {
		c.mu.Unlock()
		c.upstreamFailed(t, Failure{Code: codes.Internal, Message: "upstream sent a second header block without END_STREAM", Reached: true}, true)
		return
	}
	// Trailers, or a trailers-only response.
	code, msg := grpcStatus(fields)
	if !c.committed && c.opts.HoldHeaders && code == codes.Unavailable {
		c.mu.Unlock()
		t.c.mu.Lock()
		t.recvEnd = true
		t.c.mu.Unlock()
		c.upstreamFailed(t, Failure{Code: code, Message: msg, Reached: true}, true)
		return
	}
	if !first && !c.committed {
		c.commitLocked(c.held)
	}
	c.lastBack = t
	c.done, c.code, c.message = true, code, msg
	c.back = nil
	sent := c.sendTrailersLocked(fields)
	c.mu.Unlock()
	c.cancelUpstream(t) // RST_STREAM if we were still sending the request
	t.c.remove(t)
	if sent {
		c.finish()
	}
}

// commitLocked sends the response headers: from now on the call is the
// attempt's and cannot be retried.
func (c *Call) commitLocked(fields []hpack.HeaderField) {
	c.committed = true
	c.lastBack = c.back
	x := c.front.c
	x.mu.Lock()
	if !c.front.closed {
		x.encodeHeadersLocked(c.front.id, fields, false)
	}
	x.mu.Unlock()
	x.kick()
}

// sendTrailersLocked ends the client's stream; it reports whether the
// trailers went out now (else they follow queued data).
func (c *Call) sendTrailersLocked(fields []hpack.HeaderField) bool {
	x := c.front.c
	x.mu.Lock()
	sent := c.front.sendTrailersLocked(fields)
	x.mu.Unlock()
	x.kick()
	return sent
}

// onResponseData relays an attempt's DATA to the client, committing the
// call if its headers were held.
func (c *Call) onResponseData(t *stream, p []byte, end bool) {
	c.mu.Lock()
	if c.done || c.back != t {
		c.mu.Unlock()
		t.c.credit(nil, int64(len(p)))
		return
	}
	if !c.committed {
		if !t.gotHeaders {
			c.mu.Unlock()
			t.c.credit(nil, int64(len(p)))
			c.upstreamFailed(t, Failure{Code: codes.Internal, Message: "upstream sent DATA before HEADERS", Reached: true}, true)
			return
		}
		c.commitLocked(c.held)
		c.held = c.held[:0]
	}
	c.respLen += int64(len(p))
	x := c.front.c
	x.mu.Lock()
	if !c.front.closed {
		c.front.sendDataLocked(p, false)
	}
	over := x.pendBytes > maxConnPending && len(c.front.pend) > 0
	x.mu.Unlock()
	x.kick()
	c.mu.Unlock()
	if over {
		// The client does not take what it asked for: end this call
		// rather than hold ever more for it.
		x.mu.Lock()
		c.front.resetLocked(http2.ErrCodeEnhanceYourCalm)
		x.mu.Unlock()
		x.kick()
		c.abort(codes.ResourceExhausted, "the client does not read its responses: more than "+
			strconv.Itoa(maxConnPending>>20)+" MiB wait for its flow-control window on its connection")
		x.countResetAsync()
		return
	}
	c.creditResponse(t)
	if end {
		// gRPC responses end with trailers; a bare END_STREAM is an error.
		c.endCommitted(t, codes.Internal, "upstream closed the stream without sending trailers")
	}
}

// upstreamFailed ends attempt t with f: retried if the handler wants and
// nothing reached the client; otherwise the client gets f's status.
func (c *Call) upstreamFailed(t *stream, f Failure, reset bool) {
	c.mu.Lock()
	if c.done || c.back != t {
		c.mu.Unlock()
		return
	}
	if c.committed {
		c.mu.Unlock()
		if reset {
			t.c.resetAndRemove(t, http2.ErrCodeCancel)
		}
		c.endCommitted(t, f.Code, f.Message)
		return
	}
	c.back = nil
	c.held = c.held[:0]
	c.mu.Unlock()
	if reset {
		t.c.resetAndRemove(t, http2.ErrCodeCancel)
	} else {
		t.c.remove(t)
	}
	c.attemptFailed(f)
}

// attemptFailed asks the handler what to do after a failed attempt.
func (c *Call) attemptFailed(f Failure) {
	c.srv.Handler.AttemptFailed(c, f)
	c.mu.Lock()
	undecided := !c.done && c.back == nil && !c.queued
	c.mu.Unlock()
	if undecided {
		c.Reject(f.Code, f.Message)
	}
}

// endCommitted ends a call whose response already started: the client
// gets trailers with the status.
func (c *Call) endCommitted(t *stream, code codes.Code, msg string) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done, c.code, c.message = true, code, msg
	c.back = nil
	sent := c.sendTrailersLocked(statusFields(nil, code, msg))
	c.mu.Unlock()
	t.c.resetAndRemove(t, http2.ErrCodeCancel)
	if sent {
		c.finish()
	}
}

// onUpstreamReset: the upstream reset attempt t.
func (c *Call) onUpstreamReset(t *stream, code http2.ErrCode) {
	t.c.mu.Lock()
	t.recvEnd, t.sentEnd = true, true
	t.c.mu.Unlock()
	f := Failure{Code: codes.Internal, Message: "upstream reset the stream: " + code.String(), Reached: true, Reset: true}
	switch code {
	case http2.ErrCodeRefusedStream:
		f = Failure{Code: codes.Unavailable, Message: "upstream refused the stream", Reached: false, Reset: true}
	case http2.ErrCodeCancel:
		f.Code = codes.Canceled
	case http2.ErrCodeEnhanceYourCalm: // as grpc-go maps them
		f.Code = codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		f.Code = codes.PermissionDenied
	}
	c.upstreamFailed(t, f, false)
}

// onUpstreamRefused: a GOAWAY says the upstream never processed t.
func (c *Call) onUpstreamRefused(t *stream, msg string) {
	c.upstreamFailed(t, Failure{Code: codes.Unavailable, Message: msg, Reached: false}, false)
}

// onUpstreamLost: t's connection failed.
func (c *Call) onUpstreamLost(t *stream, reached bool, err error) {
	msg := "upstream connection lost"
	if err != nil {
		msg += ": " + err.Error()
	}
	c.upstreamFailed(t, Failure{Code: codes.Unavailable, Message: msg, Reached: reached}, false)
}

// onClientReset: the client reset its stream (usually a cancellation).
func (c *Call) onClientReset(code http2.ErrCode) {
	x := c.front.c
	x.mu.Lock()
	c.front.sentEnd, c.front.recvEnd = true, true
	x.removeLocked(c.front)
	x.mu.Unlock()
	x.maybeCloseIdle()
	st := codes.Canceled
	if code != http2.ErrCodeCancel && code != http2.ErrCodeNo {
		st = codes.Internal
	}
	c.abort(st, "client reset the stream: "+code.String())
}

// onClientGone: the client's connection failed.
func (c *Call) onClientGone() { c.abort(codes.Canceled, "client connection closed") }

// abort ends the call with nothing more sent to the client.
func (c *Call) abort(code codes.Code, msg string) {
	c.mu.Lock()
	if !c.done {
		c.done, c.code, c.message = true, code, msg
	}
	t := c.back
	c.back, c.queued = nil, false
	c.mu.Unlock()
	if t != nil {
		t.c.resetAndRemove(t, http2.ErrCodeCancel)
	}
	c.finish()
}

// resetStream answers a stream-level protocol error on s.
func (c *Call) resetStream(s *stream, code http2.ErrCode) {
	if s.front {
		x := s.c
		x.mu.Lock()
		s.resetLocked(code)
		x.mu.Unlock()
		x.kick()
		c.abort(codes.Internal, "stream error: "+code.String())
		return
	}
	c.upstreamFailed(s, Failure{Code: codes.Internal, Message: "upstream stream error: " + code.String(), Reached: true}, true)
}

// cancelUpstream stops an attempt whose response is complete but whose
// request we were still sending.
func (c *Call) cancelUpstream(t *stream) {
	y := t.c
	y.mu.Lock()
	if !t.sentEnd {
		y.wbuf = appendRSTStream(y.wbuf, t.id, http2.ErrCodeCancel)
		t.sentEnd = true
	}
	y.mu.Unlock()
	y.kick()
}

// Reject ends the call with a gRPC status, as a trailers-only response if
// nothing was sent yet. extra fields go with it (e.g. retry-after). The
// message is cut to maxStatusMessage bytes (encoded). Rejecting a call
// that was sent upstream cancels the upstream stream, which counts as a
// reset the client caused (MaxResetsPerSecond).
func (c *Call) Reject(code codes.Code, msg string, extra ...hpack.HeaderField) {
	if c.reject(code, msg, extra...) {
		c.front.c.countResetAsync()
	}
}

// reject is Reject; it reports whether an upstream stream was cancelled.
func (c *Call) reject(code codes.Code, msg string, extra ...hpack.HeaderField) (cancelled bool) {
	msg = capMessage(msg)
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return false
	}
	c.done, c.code, c.message = true, code, msg
	t := c.back
	c.back, c.queued = nil, false
	var fields []hpack.HeaderField
	if !c.committed {
		fields = append(fields, hpack.HeaderField{Name: ":status", Value: "200"},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	fields = statusFields(fields, code, msg)
	fields = append(fields, extra...)
	sent := c.sendTrailersLocked(fields)
	c.mu.Unlock()
	if t != nil {
		t.c.resetAndRemove(t, http2.ErrCodeCancel)
	}
	if sent {
		c.finish()
	}
	return t != nil
}

// Respond answers the call itself with one message (already serialized)
// and an OK status, e.g. a health check while draining.
func (c *Call) Respond(msg []byte) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return
	}
	c.done, c.code = true, codes.OK
	t := c.back
	c.back, c.queued = nil, false
	c.committed = true
	x := c.front.c
	framed := make([]byte, 5+len(msg))
	framed[1], framed[2], framed[3], framed[4] = byte(len(msg)>>24), byte(len(msg)>>16), byte(len(msg)>>8), byte(len(msg))
	copy(framed[5:], msg)
	c.respLen = int64(len(framed))
	x.mu.Lock()
	x.encodeHeadersLocked(c.front.id, []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}, false)
	c.front.sendDataLocked(framed, false)
	sent := c.front.sendTrailersLocked(statusFields(nil, codes.OK, ""))
	x.mu.Unlock()
	x.kick()
	c.mu.Unlock()
	if t != nil {
		t.c.resetAndRemove(t, http2.ErrCodeCancel)
	}
	if sent {
		c.finish()
	}
}

// finish settles the call's flow-control debts and tells the handler.
func (c *Call) finish() {
	c.mu.Lock()
	if c.finished {
		c.mu.Unlock()
		return
	}
	c.finished, c.done = true, true
	t := c.lastBack
	reqLen, respLen := c.reqLen, c.respLen
	c.req, c.held = nil, nil
	c.mu.Unlock()
	// Bytes received but never forwarded still count against the
	// connections' windows: return them.
	if d := reqLen - c.reqCredited.Swap(max(reqLen, c.reqCredited.Load())); d > 0 {
		c.front.c.credit(nil, d)
	}
	if t != nil {
		if d := respLen - c.resCredited.Swap(max(respLen, c.resCredited.Load())); d > 0 {
			t.c.credit(nil, d)
		}
	}
	c.front.c.maybeCloseIdle()
	c.srv.Handler.CallDone(c)
}

// HeaderField is one header, as HPACK decodes it.
type HeaderField = hpack.HeaderField
