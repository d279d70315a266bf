package h2relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"unicode/utf8"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// rawClient speaks HTTP/2 frame by frame, to send what well-behaved
// clients never do.
type rawClient struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.buf)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rawClient) headers(id uint32, end bool, fields ...string) {
	if err := r.tryHeaders(id, end, fields...); err != nil {
		r.t.Fatal(err)
	}
}

// tryHeaders sends HEADERS, reporting a write error (the relay may have
// closed the connection).
func (r *rawClient) tryHeaders(id uint32, end bool, fields ...string) error {
	r.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndHeaders: true, EndStream: end})
}

var grpcReq = []string{":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall", ":authority", "x", "content-type", "application/grpc", "te", "trailers"}

// next reads frames until one for which keep returns true.
func (r *rawClient) next(keep func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("reading: %v", err)
		}
		if keep(f) {
			return f
		}
	}
}

func rstOn(id uint32) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		rf, ok := f.(*http2.RSTStreamFrame)
		return ok && rf.StreamID == id
	}
}

func isGoAway(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }

func headersOn(id uint32) func(http2.Frame) bool {
	return func(f http2.Frame) bool {
		hf, ok := f.(*http2.MetaHeadersFrame)
		return ok && hf.StreamID == id
	}
}

func TestMalformedRequestsAreReset(t *testing.T) {
	b := startBackend(t)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}, false)
	r := dialRaw(t, e.addr)
	cases := [][]string{
		append(append([]string{}, grpcReq...), "X-Endpoint-API-UserInfo", "spoof"), // upper case smuggles past lower-case filters
		append(append([]string{}, grpcReq...), "connection", "keep-alive"),
		append(append([]string{}, grpcReq...), "te", "gzip"),
		{":method", "POST", ":path", "/a/b", "content-type", "application/grpc"}, // no :scheme
		append([]string{"x-first", "1"}, grpcReq...),                             // pseudo after regular
		append(append([]string{}, grpcReq...), "x-bad", "a\r\nb"),
	}
	for i, fields := range cases {
		id := uint32(2*i + 1)
		r.headers(id, true, fields...)
		f := r.next(func(f http2.Frame) bool { return rstOn(id)(f) || headersOn(id)(f) })
		rf, ok := f.(*http2.RSTStreamFrame)
		if !ok || rf.ErrCode != http2.ErrCodeProtocol {
			t.Errorf("case %d %v: got %v, want RST_STREAM PROTOCOL_ERROR", i, fields, f)
		}
	}
}

func TestNonGRPCGets415(t *testing.T) {
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	r.headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/", ":authority", "x", "content-type", "text/html")
	hf := r.next(headersOn(1)).(*http2.MetaHeadersFrame)
	if hf.PseudoValue("status") != "415" || !hf.StreamEnded() {
		t.Fatalf("got %v", hf.Fields)
	}
}

func TestRapidResetIsStopped(t *testing.T) {
	b := startBackend(t)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}, false)
	r := dialRaw(t, e.addr)
	for i := range DefaultMaxResetsPerSecond + 10 {
		id := uint32(2*i + 1)
		r.headers(id, false, grpcReq...)
		if err := r.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break // the relay may close first
		}
	}
	wantCalmGoAway(t, e, r)
}

func TestPingFloodIsStopped(t *testing.T) {
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	for range DefaultMaxPingsPerSecond + 10 {
		if err := r.fr.WritePing(false, [8]byte{}); err != nil {
			break
		}
	}
	wantCalmGoAway(t, e, r)
}

func TestFlowControlViolationEndsConnection(t *testing.T) {
	// The handler never decides, so nothing the client sends is forwarded
	// and no window is given back.
	e := startRelay(t, stallHandler{}, false)
	r := dialRaw(t, e.addr)
	r.headers(1, false, grpcReq...)
	chunk := make([]byte, 16384)
	for range 600 { // 9.4 MiB: past the 1 MiB stream and 8 MiB connection windows
		if err := r.fr.WriteData(1, false, chunk); err != nil {
			break
		}
	}
	f := r.next(func(f http2.Frame) bool { return isGoAway(f) || rstOn(1)(f) })
	switch f := f.(type) {
	case *http2.GoAwayFrame:
		if f.ErrCode != http2.ErrCodeFlowControl {
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	case *http2.RSTStreamFrame:
		if f.ErrCode != http2.ErrCodeFlowControl {
			t.Fatalf("RST_STREAM %v", f.ErrCode)
		}
	}
}

type stallHandler struct{}

func (stallHandler) ServeCall(*Call)              {}
func (stallHandler) AttemptFailed(*Call, Failure) {}
func (stallHandler) CallDone(*Call)               {}

// A GOAWAY from the upstream below a stream's id means it was never
// processed: the call is retried even though it was sent. (The upstream
// keeps the connection open: the GOAWAY alone must do it.)
func TestUpstreamGoAwayRefusesUnprocessedStreams(t *testing.T) {
	addr := rawUpstream(t, func(fr *http2.Framer, f http2.Frame) bool {
		if _, ok := f.(*http2.HeadersFrame); ok {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}
		return true
	})
	b := startBackend(t)
	fails := make(chan Failure, 4)
	h := &forwarder{ups: []*Upstream{NewUpstream(addr, UpstreamOptions{}), NewUpstream(b.addr, UpstreamOptions{})},
		opts: ForwardOptions{RetryBuffer: 1 << 20, HoldHeaders: true}, failures: fails, retry: func(f Failure) bool { return !f.Reached }}
	cl := startRelay(t, h, false).dial(t)
	if _, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("call: %v", err)
	}
	if f := <-fails; f.Reached || f.Code != codes.Unavailable {
		t.Errorf("failure = %+v, want not reached", f)
	}
}

// rawUpstream is an HTTP/2 server written frame by frame: it sends its
// SETTINGS, then hands each frame it reads to handle until that returns
// false. It serves one connection.
func rawUpstream(t *testing.T, handle func(*http2.Framer, http2.Frame) bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		fr := http2.NewFramer(nc, nc)
		pre := make([]byte, len(http2.ClientPreface))
		if _, err := io.ReadFull(nc, pre); err != nil {
			return
		}
		_ = fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil || !handle(fr, f) {
				return
			}
		}
	}()
	return ln.Addr().String()
}

// An upstream that stops answering (its host gone, the network cut) is
// found by keepalive pings: calls in flight fail as UNAVAILABLE instead of
// hanging until their deadline.
func TestKeepaliveFindsDeadUpstream(t *testing.T) {
	var pings atomic.Int32
	addr := rawUpstream(t, func(_ *http2.Framer, f http2.Frame) bool {
		if _, ok := f.(*http2.PingFrame); ok {
			pings.Add(1) // never answered
		}
		return true
	})
	up := NewUpstream(addr, UpstreamOptions{KeepaliveTime: 200 * time.Millisecond, KeepaliveTimeout: 200 * time.Millisecond})
	cl := startRelay(t, &forwarder{ups: []*Upstream{up}}, false).dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "keepalive") || pings.Load() == 0 {
		t.Fatalf("call to an upstream that went silent: %v after %s (%d pings); want UNAVAILABLE naming the keepalive", err, time.Since(start), pings.Load())
	}
}

// A connection without calls is not pinged: grpc-go servers close
// connections pinged without streams (GOAWAY too_many_pings).
func TestIdleUpstreamIsNotPinged(t *testing.T) {
	const keepalive = 50 * time.Millisecond
	var pings atomic.Int32
	framer := make(chan *http2.Framer, 1)
	acked := make(chan struct{}, 1)
	addr := rawUpstream(t, func(fr *http2.Framer, f http2.Frame) bool {
		if _, ok := f.(*http2.SettingsFrame); ok {
			select {
			case framer <- fr:
			default:
			}
		}
		if p, ok := f.(*http2.PingFrame); ok {
			if p.IsAck() {
				acked <- struct{}{}
			} else {
				pings.Add(1)
			}
		}
		return true
	})
	up := NewUpstream(addr, UpstreamOptions{KeepaliveTime: keepalive})
	defer up.Close()
	up.Connect()
	waitUntil(t, 5*time.Second, up.Connected, func() string { return "never connected" })
	fr := <-framer
	up.mu.Lock()
	y := up.conns[0]
	up.mu.Unlock()
	// Housekeeping over ten keepalive intervals without a frame read
	// (housekeep takes the time it runs at).
	now := time.Now()
	for i := range 10 {
		y.housekeep(now.Add(time.Duration(i+1) * keepalive))
	}
	// Whatever the relay queued before our PING's ACK reached us first.
	if err := fr.WritePing(false, [8]byte{'b', 'a', 'r', 'r', 'i', 'e', 'r'}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-acked:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not answer the upstream's PING")
	}
	if n := pings.Load(); n != 0 {
		t.Fatalf("%d pings on a connection without calls, want 0", n)
	}
}

// Frames on streams never opened are connection errors (RFC 9113 §5.1).
func TestFramesOnIdleStreamsEndConnection(t *testing.T) {
	for _, send := range []func(r *rawClient) error{
		func(r *rawClient) error { return r.fr.WriteRSTStream(99, http2.ErrCodeCancel) },
		func(r *rawClient) error { return r.fr.WriteWindowUpdate(99, 10) },
		func(r *rawClient) error { return r.fr.WriteData(99, true, []byte{0, 0, 0, 0, 0}) },
	} {
		e := startRelay(t, stallHandler{}, false)
		r := dialRaw(t, e.addr)
		if err := send(r); err != nil {
			t.Fatal(err)
		}
		if ga := r.next(isGoAway).(*http2.GoAwayFrame); ga.ErrCode != http2.ErrCodeProtocol {
			t.Fatalf("GOAWAY %v, want PROTOCOL_ERROR", ga.ErrCode)
		}
	}
}

// DATA after the client's END_STREAM is a stream error STREAM_CLOSED.
func TestDataAfterEndStreamIsStreamClosed(t *testing.T) {
	e := startRelay(t, stallHandler{}, false)
	r := dialRaw(t, e.addr)
	r.headers(1, true, grpcReq...)
	if err := r.fr.WriteData(1, false, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	if rst := r.next(rstOn(1)).(*http2.RSTStreamFrame); rst.ErrCode != http2.ErrCodeStreamClosed {
		t.Fatalf("RST_STREAM %v, want STREAM_CLOSED", rst.ErrCode)
	}
}

// wantCalmGoAway expects the relay to end r's connection with GOAWAY
// ENHANCE_YOUR_CALM, and to count it in its stats (for its metrics).
func wantCalmGoAway(t *testing.T, e *relayEnv, r *rawClient) {
	t.Helper()
	ga := r.next(isGoAway).(*http2.GoAwayFrame)
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
	}
	waitUntil(t, 5*time.Second, func() bool { return e.srv.Stats().Errors[http2.ErrCodeEnhanceYourCalm] == 1 }, func() string {
		return fmt.Sprintf("stats after the GOAWAY: %+v", e.srv.Stats())
	})
	if st := e.srv.Stats(); st.Accepted != 1 {
		t.Fatalf("accepted %d connections, want 1", st.Accepted)
	}
}

// conns sums f over the relay's open client connections, each under its
// lock, and says how many there are.
func (e *relayEnv) conns(f func(*conn) int) (n, total int) {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	for c := range e.srv.conns {
		c.mu.Lock()
		total += f(c)
		c.mu.Unlock()
	}
	return len(e.srv.conns), total
}

// startCountingBackend is startBackend with a count of the streams the
// grpc-go server saw opened (its tap runs on every new stream's headers).
func startCountingBackend(t *testing.T) (*backend, *atomic.Int32) {
	var n atomic.Int32
	b := startBackend(t, grpc.InTapHandle(func(ctx context.Context, _ *tap.Info) (context.Context, error) {
		n.Add(1)
		return ctx, nil
	}))
	return b, &n
}

func withField(fields []string, kv ...string) []string {
	return append(append([]string{}, fields...), kv...)
}

// Requests that RFC 9113 §8.2–8.3 calls malformed are reset with
// PROTOCOL_ERROR and never reach the upstream. With two :path fields the
// relay (and the gateway's auth) would decide on one while a backend that
// reads the other serves it.
func TestDuplicateAndInvalidPseudoHeadersAreMalformed(t *testing.T) {
	b, opened := startCountingBackend(t)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}, false)
	r := dialRaw(t, e.addr)
	cases := map[string][]string{
		"two :path":              withField(grpcReq[:6], ":path", "/grpc.testing.TestService/EmptyCall", "content-type", "application/grpc"),
		"two :method":            {":method", "POST", ":method", "POST", ":scheme", "http", ":path", "/a/b", "content-type", "application/grpc"},
		"two :scheme":            {":method", "POST", ":scheme", "http", ":scheme", "https", ":path", "/a/b", "content-type", "application/grpc"},
		"two :authority":         {":method", "POST", ":scheme", "http", ":path", "/a/b", ":authority", "a", ":authority", "b", "content-type", "application/grpc"},
		"two host":               {":method", "POST", ":scheme", "http", ":path", "/a/b", "host", "a", "host", "b", "content-type", "application/grpc"},
		"space in :path":         {":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall /x", "content-type", "application/grpc"},
		"control in :path":       {":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall\x01", "content-type", "application/grpc"},
		"space in :authority":    {":method", "POST", ":scheme", "http", ":path", "/a/b", ":authority", "a b", "content-type", "application/grpc"},
		"userinfo in :authority": {":method", "POST", ":scheme", "http", ":path", "/a/b", ":authority", "user@host", "content-type", "application/grpc"},
		"bad :method":            {":method", "PO ST", ":scheme", "http", ":path", "/a/b", "content-type", "application/grpc"},
		"bad :scheme":            {":method", "POST", ":scheme", "ht tp", ":path", "/a/b", "content-type", "application/grpc"},
	}
	id := uint32(1)
	for name, fields := range cases {
		r.headers(id, true, fields...)
		f := r.next(func(f http2.Frame) bool { return rstOn(id)(f) || headersOn(id)(f) })
		if rf, ok := f.(*http2.RSTStreamFrame); !ok || rf.ErrCode != http2.ErrCodeProtocol {
			t.Errorf("%s: got %v, want RST_STREAM PROTOCOL_ERROR", name, f)
		}
		id += 2
	}
	// A well-formed call on the same connection still works, and it is
	// the only stream the upstream saw.
	r.headers(id, false, grpcReq...)
	if err := r.fr.WriteData(id, true, grpcFrame(nil)); err != nil {
		t.Fatal(err)
	}
	if hf := r.next(headersOn(id)).(*http2.MetaHeadersFrame); hf.PseudoValue("status") != "200" {
		t.Fatalf("well-formed call: %v", hf.Fields)
	}
	if n := opened.Load(); n != 1 {
		t.Fatalf("the upstream saw %d streams opened, want 1 (malformed requests are never forwarded)", n)
	}

	// Trailers carry no pseudo-headers.
	r2 := dialRaw(t, startRelay(t, stallHandler{}, false).addr)
	r2.headers(1, false, grpcReq...)
	r2.headers(1, true, ":path", "/x")
	if rst := r2.next(rstOn(1)).(*http2.RSTStreamFrame); rst.ErrCode != http2.ErrCodeProtocol {
		t.Fatalf("trailers with :path: RST_STREAM %v, want PROTOCOL_ERROR", rst.ErrCode)
	}
}

// HEADERS on a stream that is closed, or half-closed by the client, is a
// stream error STREAM_CLOSED (RFC 9113 §5.1), not ignored or taken as
// trailers.
func TestHeadersOnClosedStreamIsStreamClosed(t *testing.T) {
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	// Stream 1: rejected by the handler, closed both ways.
	r.headers(1, true, withField(grpcReq, "x-reject", "no")...)
	if hf := r.next(headersOn(1)).(*http2.MetaHeadersFrame); !hf.StreamEnded() {
		t.Fatalf("want a trailers-only answer, got %v", hf.Fields)
	}
	r.headers(1, true, grpcReq...)
	if rst := r.next(rstOn(1)).(*http2.RSTStreamFrame); rst.ErrCode != http2.ErrCodeStreamClosed {
		t.Fatalf("HEADERS on a closed stream: RST_STREAM %v, want STREAM_CLOSED", rst.ErrCode)
	}

	// Stream 1 of a handler that holds the call: half-closed (remote).
	e2 := startRelay(t, stallHandler{}, false)
	r2 := dialRaw(t, e2.addr)
	r2.headers(1, true, grpcReq...)
	r2.headers(1, true, "x-trailer", "1")
	if rst := r2.next(rstOn(1)).(*http2.RSTStreamFrame); rst.ErrCode != http2.ErrCodeStreamClosed {
		t.Fatalf("HEADERS on a half-closed stream: RST_STREAM %v, want STREAM_CLOSED", rst.ErrCode)
	}
}

// An upstream whose response headers carry :status twice (or any other
// pseudo-header) sent a malformed response: the call fails INTERNAL
// instead of relaying it.
func TestUpstreamDuplicateStatusIsMalformed(t *testing.T) {
	addr := rawUpstream(t, func(fr *http2.Framer, f http2.Frame) bool {
		hf, ok := f.(*http2.HeadersFrame)
		if !ok {
			return true
		}
		var b bytes.Buffer
		enc := hpack.NewEncoder(&b)
		for _, kv := range [][2]string{{":status", "200"}, {":status", "200"}, {"content-type", "application/grpc"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: b.Bytes(), EndHeaders: true})
		b.Reset()
		_ = enc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: b.Bytes(), EndHeaders: true, EndStream: true})
		return true
	})
	done := make(chan *Call, 1)
	cl := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(addr, UpstreamOptions{})}, done: done}, false).dial(t)
	_, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{})
	if status.Code(err) != codes.Internal {
		t.Errorf("client: %v, want INTERNAL", err)
	}
	if code, msg := (<-done).Result(); code != codes.Internal || !strings.Contains(msg, "malformed") {
		t.Fatalf("call result %v %q, want INTERNAL for a malformed response", code, msg)
	}
}

// What the relay writes into grpc-message is capped: an error text that
// echoes a client's input (here a 10 KB header of non-ASCII bytes, each
// percent-encoded in three) must not make every rejected call cost its
// size.
func TestEchoedStatusMessageIsCapped(t *testing.T) {
	done := make(chan *Call, 1)
	r := dialRaw(t, startRelay(t, &forwarder{done: done}, false).addr)
	r.headers(1, true, withField(grpcReq, "x-reject", strings.Repeat("é", 5000))...)
	hf := r.next(headersOn(1)).(*http2.MetaHeadersFrame)
	var raw string
	for _, f := range hf.Fields {
		if f.Name == "grpc-message" {
			raw = f.Value
		}
	}
	if len(raw) > maxStatusMessage {
		t.Fatalf("grpc-message of %d bytes, want at most %d", len(raw), maxStatusMessage)
	}
	msg := decodeGrpcMessage(raw)
	if !strings.HasPrefix(msg, "rejected: éé") || !strings.HasSuffix(msg, "...") || !utf8.ValidString(msg) {
		t.Fatalf("grpc-message %q: want the start of the message, cut at a character and marked", msg)
	}
	if _, res := (<-done).Result(); res != msg {
		t.Fatalf("Call.Result message differs from the one sent: %d vs %d bytes", len(res), len(msg))
	}
}

// parseRequest never panics, and what it accepts has each of :method,
// :scheme and :path exactly once, pseudo-headers first, and a :path
// without spaces or control characters; capMessage always fits.
func FuzzParseRequest(f *testing.F) {
	f.Add(":method\x00POST\x00:scheme\x00http\x00:path\x00/a/b\x00content-type\x00application/grpc")
	f.Add(":method\x00POST\x00:scheme\x00http\x00:path\x00/a/b\x00:path\x00/c/d\x00content-type\x00application/grpc")
	f.Add(":method\x00POST\x00:path\x00/a b\x00:scheme\x00http\x00host\x00x\x00host\x00y")
	f.Fuzz(func(t *testing.T, s string) {
		parts := strings.Split(s, "\x00")
		var fields []hpack.HeaderField
		for i := 0; i+1 < len(parts); i += 2 {
			fields = append(fields, hpack.HeaderField{Name: parts[i], Value: parts[i+1]})
		}
		if msg := capMessage(s); len(encodeGrpcMessage(msg)) > maxStatusMessage {
			t.Fatalf("capMessage: %d bytes encoded", len(encodeGrpcMessage(msg)))
		}
		r, status, _ := parseRequest(fields)
		if status == -1 {
			return
		}
		counts := map[string]int{}
		regular := false
		for _, f := range fields {
			if strings.HasPrefix(f.Name, ":") {
				if regular {
					t.Fatalf("accepted a pseudo-header after a regular one: %q", fields)
				}
				counts[f.Name]++
			} else {
				regular = true
			}
		}
		for _, name := range []string{":method", ":scheme", ":path"} {
			if counts[name] != 1 {
				t.Fatalf("accepted %d %s fields: %q", counts[name], name, fields)
			}
		}
		if strings.ContainsAny(r.path, " \t\r\n\x00\x7f") {
			t.Fatalf("accepted :path %q", r.path)
		}
	})
}
