package h2relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// unreadStreams opens n server-streaming calls of size bytes each on a
// raw connection that never sends WINDOW_UPDATE.
func unreadStreams(t *testing.T, addr string, n int, size int32) *rawClient {
	r := dialRaw(t, addr)
	_ = r.nc.SetDeadline(time.Now().Add(60 * time.Second))
	req, _ := protoMarshal(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: size}}})
	for i := range n {
		id := uint32(2*i + 1)
		r.headers(id, false, streamingReq...)
		if err := r.fr.WriteData(id, true, grpcFrame(req)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

var streamingReq = []string{":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/StreamingOutputCall", ":authority", "x", "content-type", "application/grpc", "te", "trailers"}

func grpcFrame(b []byte) []byte {
	out := make([]byte, 5+len(b))
	out[1], out[2], out[3], out[4] = byte(len(b)>>24), byte(len(b)>>16), byte(len(b)>>8), byte(len(b))
	copy(out[5:], b)
	return out
}

// One client that does not read its streams (it never sends
// WINDOW_UPDATE) must not stall other clients' calls on the upstream
// connection they share: the upstream connection's window is returned as
// bytes arrive, and what waits for the slow client is bounded by its
// streams' windows.
func TestSlowClientDoesNotStallSharedUpstream(t *testing.T) {
	b := startBackend(t)
	up := NewUpstream(b.addr, UpstreamOptions{})
	e := startRelay(t, &forwarder{ups: []*Upstream{up}}, false)

	// The slow client: 9 server-streaming calls of 4 MiB each, never read.
	// The upstream fills their 1 MiB stream windows: the relay holds more
	// for the slow client than the whole upstream connection's window.
	unreadStreams(t, e.addr, 9, 4<<20)
	held := func() int { _, n := e.conns(func(c *conn) int { return int(c.pendBytes) }); return n }
	waitUntil(t, 20*time.Second, func() bool { return held() > int(up.opts.ConnWindow) }, func() string {
		return fmt.Sprintf("the relay holds %d bytes for the slow client, want more than the upstream connection window (%d): the upstream stopped sending", held(), up.opts.ConnWindow)
	})

	// An unrelated, well-behaved client.
	cl := e.dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}})
	if err != nil {
		up.mu.Lock()
		y := up.conns[0]
		up.mu.Unlock()
		y.mu.Lock()
		t.Logf("upstream conn: recvWin=%d recvUnacked=%d streams=%d", y.recvWin, y.recvUnacked, len(y.streams))
		y.mu.Unlock()
		t.Fatalf("unrelated unary call through the relay: %v", err)
	}
}

// A SETTINGS flood from a client that never reads: every SETTINGS
// queues an acknowledgement; past maxQueuedControl the relay ends the
// connection instead of buffering them without bound.
func TestSettingsFloodEndsConnection(t *testing.T) {
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	_ = r.nc.SetDeadline(time.Now().Add(60 * time.Second))
	frame := []byte{0, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0}
	batch := bytes.Repeat(frame, 100000)
	var werr error
	for range 40 { // up to 4M frames, 36 MB, nothing read
		if _, werr = r.nc.Write(batch); werr != nil {
			break
		}
	}
	if werr == nil {
		// Everything was taken in: the relay must have closed it since.
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, werr = io.Copy(io.Discard, r.nc)
		if werr == nil {
			werr = io.EOF
		}
	}
	waitUntil(t, 5*time.Second, func() bool { n, _ := e.conns(func(*conn) int { return 0 }); return n == 0 }, func() string {
		_, queued := e.conns(func(c *conn) int { return len(c.wbuf) })
		return fmt.Sprintf("the flooding connection is still open, %d bytes queued for it", queued)
	})
	t.Logf("the relay closed the connection (client saw: %v)", werr)
}

// The client connection's reader flushes a stream's last queued DATA on a
// WINDOW_UPDATE while the upstream connection's reader writes the
// trailers and closes the stream. In either order, or both at once, the
// client gets the DATA and then the trailers, the stream is forgotten, and
// the call finishes exactly once. Call.afterFlush must read stream.closed
// under the connection's lock: under -race the rounds "at once" catch a
// regression there. (White-box: two conns on pipes, no reader or writer.)
func TestAfterFlushRacesNotWithTrailers(t *testing.T) {
	for _, tc := range []struct {
		order  string
		rounds int
	}{{"window first", 1}, {"trailers first", 1}, {"at once", 200}} {
		t.Run(tc.order, func(t *testing.T) {
			for range tc.rounds {
				afterFlushRound(t, tc.order)
			}
		})
	}
}

// afterFlushRound sets up a committed call whose client stream has 100
// bytes of DATA waiting for window, then gives it the window and the
// upstream's trailers in the given order.
func afterFlushRound(t *testing.T, order string) {
	t.Helper()
	xa, xb := net.Pipe()
	ya, yb := net.Pipe()
	defer xa.Close()
	defer xb.Close()
	defer ya.Close()
	defer yb.Close()
	var finished atomic.Int32
	srv := &Server{Handler: doneCounter{&finished}}
	x := newConn(xa, false, srv.settings(), srv.Limits)
	x.srv = srv
	u := NewUpstream("unused:1", UpstreamOptions{})
	y := newConn(ya, true, u.set, Limits{})
	y.up = u
	call := &Call{srv: srv, up: u}
	front := &stream{id: 1, c: x, call: call, front: true, recvEnd: true, recvWin: 1 << 20}
	call.front = front
	x.streams[1] = front
	back := &stream{id: 1, c: y, call: call, sendWin: 65535, recvWin: 1 << 20, sentEnd: true, gotHeaders: true}
	y.streams[1] = back
	y.nextID = 3
	y.active.Store(1)
	call.back, call.lastBack, call.committed = back, back, true
	// The client's stream window is 0: response DATA waits in front.pend.
	x.mu.Lock()
	front.sendWin = 0
	front.sendDataLocked(make([]byte, 100), false)
	x.mu.Unlock()

	var windowErr error
	window := func() { // the client connection's reader: WINDOW_UPDATE(stream 1, 1000)
		windowErr = x.onWindowUpdate(frameHeader{length: 4, typ: http2.FrameWindowUpdate, stream: 1}, []byte{0, 0, 3, 232})
	}
	trailers := func() { // the upstream connection's reader
		call.onResponseHeaders(back, []hpack.HeaderField{{Name: "grpc-status", Value: "0"}}, true)
	}
	switch order {
	case "window first":
		window()
		trailers()
	case "trailers first":
		trailers()
		window()
	default:
		start := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { <-start; trailers() })
		wg.Go(func() { <-start; window() })
		close(start)
		wg.Wait()
	}
	if windowErr != nil {
		t.Fatalf("%s: WINDOW_UPDATE: %v", order, windowErr)
	}
	if n := finished.Load(); n != 1 {
		t.Fatalf("%s: CallDone ran %d times, want once", order, n)
	}
	x.mu.Lock()
	out := bytes.Clone(x.wbuf)
	_, open := x.streams[1]
	closed, pend := front.closed, x.pendBytes
	x.mu.Unlock()
	if open || !closed || pend != 0 {
		t.Fatalf("%s: client stream still known %v, closed %v, %d bytes pending; want forgotten with nothing pending", order, open, closed, pend)
	}
	// What the client is sent: the DATA, then the trailers ending the stream.
	fr := http2.NewFramer(nil, bytes.NewReader(out))
	fr.ReadMetaHeaders = hpack.NewDecoder(defaultTableSize, nil)
	var got []string
	for {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: the frames queued for the client: %v", order, err)
		}
		switch f := f.(type) {
		case *http2.DataFrame:
			got = append(got, fmt.Sprintf("DATA on %d, %d bytes, end %v", f.StreamID, len(f.Data()), f.StreamEnded()))
		case *http2.MetaHeadersFrame:
			code, _ := grpcStatus(f.Fields)
			got = append(got, fmt.Sprintf("HEADERS on %d, %v, end %v", f.StreamID, code, f.StreamEnded()))
		default:
			got = append(got, fmt.Sprint(f))
		}
	}
	want := []string{"DATA on 1, 100 bytes, end false", "HEADERS on 1, OK, end true"}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: the client is sent %q, want %q", order, got, want)
	}
}

// doneCounter counts CallDone.
type doneCounter struct{ n *atomic.Int32 }

func (doneCounter) ServeCall(*Call)              {}
func (doneCounter) AttemptFailed(*Call, Failure) {}
func (h doneCounter) CallDone(*Call)             { h.n.Add(1) }

// A client that makes the relay reset each stream it opens (here with a
// WINDOW_UPDATE of 0, a stream error) is a rapid reset too: each such
// stream costs the upstream a HEADERS and a RST_STREAM, so these count
// against the same limit as the client's own RST_STREAMs.
func TestRapidResetByStreamErrorsIsStopped(t *testing.T) {
	var heads atomic.Int32
	addr := rawUpstream(t, func(_ *http2.Framer, f http2.Frame) bool {
		if _, ok := f.(*http2.HeadersFrame); ok {
			heads.Add(1)
		}
		return true
	})
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(addr, UpstreamOptions{})}}, false)
	r := dialRaw(t, e.addr)
	goaway := make(chan http2.ErrCode, 1)
	go func() {
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				close(goaway)
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goaway <- g.ErrCode
				return
			}
		}
	}()
	const n = 5000
	for i := range n {
		id := uint32(2*i + 1)
		if r.tryHeaders(id, false, grpcReq...) != nil || r.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, id, []byte{0, 0, 0, 0}) != nil {
			break // closed by the relay
		}
	}
	select {
	case code, ok := <-goaway:
		if ok && code != http2.ErrCodeEnhanceYourCalm {
			t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%d streams opened and reset with no GOAWAY; the upstream saw %d HEADERS", n, heads.Load())
	}
	if h := heads.Load(); h > DefaultMaxResetsPerSecond+100 {
		t.Fatalf("the upstream saw %d HEADERS before the relay stopped the client, want about %d at most", h, DefaultMaxResetsPerSecond)
	}
}

// A client that grants huge windows and then stops reading its socket:
// the relay queues at most maxWriteQueue for it and holds the rest back in
// the upstream (uncredited), instead of buffering the whole response.
func TestNonReadingClientHoldsBackUpstream(t *testing.T) {
	b := startBackend(t)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}, false)
	nc, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fr := http2.NewFramer(nc, nc)
	_, _ = nc.Write([]byte(http2.ClientPreface))
	_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	_ = fr.WriteWindowUpdate(0, 1<<31-1-65535)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.testing.TestService/StreamingOutputCall"}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	var params []*testpb.ResponseParameters
	for range 32 {
		params = append(params, &testpb.ResponseParameters{Size: 2 << 20})
	}
	req, _ := protoMarshal(&testpb.StreamingOutputCallRequest{ResponseParameters: params})
	_ = fr.WriteData(1, true, grpcFrame(req))
	// Never read. The relay holds back once the upstream has used all the
	// stream window it was given and gets no more: from then on nothing
	// more arrives for the client (or the queue already broke its bound).
	queued := func() int { _, n := e.conns(func(c *conn) int { return len(c.wbuf) }); return n }
	waitUntil(t, 20*time.Second, func() bool { return queued() > 16<<20 || upstreamWindowUsedUp(e, 1) }, func() string {
		return fmt.Sprintf("the upstream still sends for a client that does not read, %d bytes queued for it", queued())
	})
	n := queued()
	t.Logf("unwritten bytes queued in the relay for this client: %d MB", n>>20)
	if n > 16<<20 {
		t.Fatalf("relay holds %d MB for one stream of a client that does not read (stream window 1 MiB, conn window 8 MiB)", n>>20)
	}
}

// upstreamWindowUsedUp reports whether the upstream of client stream id
// (on the relay's one client connection) has used up the window the relay
// gave it.
func upstreamWindowUsedUp(e *relayEnv, id uint32) bool {
	var s *stream
	e.conns(func(c *conn) int { s = c.streams[id]; return 0 })
	if s == nil {
		return false
	}
	s.call.mu.Lock()
	t := s.call.back
	s.call.mu.Unlock()
	if t == nil {
		return false
	}
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.recvWin == 0
}

// grpc-go servers send no SETTINGS_MAX_CONCURRENT_STREAMS, which means
// no limit (RFC 9113 §6.5.2): the relay's guess of 100 made before
// SETTINGS must not stay, or call 101 on one connection would wait.
func TestUpstreamWithoutStreamLimit(t *testing.T) {
	b := startBackend(t)
	up := NewUpstream(b.addr, UpstreamOptions{MaxConns: 1})
	cl := startRelay(t, &forwarder{ups: []*Upstream{up}}, false).dial(t)
	for range 100 {
		go func() {
			_, _ = cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("block")}})
		}()
	}
	waitBlocked(t, b, 100) // 100 streams open on the one connection
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("x")}})
	close(b.svc.Block)
	if err != nil {
		t.Fatalf("call 101 on a backend without a stream limit: %v", err)
	}
}

// An upstream that stops reading (host gone, network cut) after granting
// large windows blocks the connection's writer; keepalive runs on its own
// timer, so it still finds the upstream dead and the call fails fast.
func TestKeepaliveFindsUpstreamThatStoppedReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stop := make(chan struct{})
	defer close(stop)
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
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
		_ = fr.WriteWindowUpdate(0, 1<<31-1-65535)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if _, ok := f.(*http2.DataFrame); ok {
				<-stop // the host is gone: nothing read, nothing answered
				return
			}
		}
	}()
	up := NewUpstream(ln.Addr().String(), UpstreamOptions{KeepaliveTime: 200 * time.Millisecond, KeepaliveTimeout: 200 * time.Millisecond})
	cl := startRelay(t, &forwarder{ups: []*Upstream{up}}, false).dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	start := time.Now()
	cs, err := cl.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 256 {
			if cs.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 1<<20)}}) != nil {
				return
			}
		}
		_ = cs.CloseSend()
	}()
	err = cs.RecvMsg(new(testpb.StreamingInputCallResponse))
	up.mu.Lock()
	var wb int
	if len(up.conns) > 0 {
		y := up.conns[0]
		y.mu.Lock()
		wb = len(y.wbuf)
		y.mu.Unlock()
	}
	up.mu.Unlock()
	t.Logf("after %v: %v (upstream wbuf %d MB)", time.Since(start).Round(time.Millisecond), err, wb>>20)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("keepalive (200ms/200ms) did not find the upstream that stopped reading")
	}
}

// A client that opens many streaming calls and never opens their
// flow-control windows: each stream may hold up to the upstream stream's
// window in the relay, so past maxConnPending on the connection the relay
// ends the calls that add more (RST_STREAM ENHANCE_YOUR_CALM) instead of
// holding up to a GiB for one client.
func TestClientPendingIsBounded(t *testing.T) {
	b := startBackend(t)
	done := make(chan *Call, 64)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}, done: done}, false)
	r := unreadStreams(t, e.addr, 48, 2<<20) // × up to 1 MiB each held for the client: past 32 MiB
	resets := 0
	deadline := time.After(20 * time.Second)
	for resets == 0 {
		select {
		case c := <-done:
			if code, msg := c.Result(); code == codes.ResourceExhausted && strings.Contains(msg, "does not read") {
				resets++
			}
		case <-deadline:
			t.Fatal("no call was ended although the client held back more than maxConnPending")
		}
	}
	e.srv.mu.Lock()
	var pending int64
	for c := range e.srv.conns {
		c.mu.Lock()
		pending = c.pendBytes
		c.mu.Unlock()
	}
	e.srv.mu.Unlock()
	if pending > maxConnPending+1<<20 {
		t.Fatalf("%d MiB held for the client, want at most about %d", pending>>20, maxConnPending>>20)
	}
	// The client sees the reset.
	f := r.next(func(f http2.Frame) bool {
		rst, ok := f.(*http2.RSTStreamFrame)
		return ok && rst.ErrCode == http2.ErrCodeEnhanceYourCalm
	})
	t.Logf("RST_STREAM %v on stream %d; %d MiB held for the client", f.(*http2.RSTStreamFrame).ErrCode, f.Header().StreamID, pending>>20)
}

// wantCutOff expects the relay to end r's connection with GOAWAY code,
// and to count it in its stats as a flood of that kind.
func wantCutOff(t *testing.T, e *relayEnv, r *rawClient, code http2.ErrCode, kind string) {
	t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	if ga := r.next(isGoAway).(*http2.GoAwayFrame); ga.ErrCode != code {
		t.Fatalf("GOAWAY %v (%s), want %v", ga.ErrCode, ga.DebugData(), code)
	}
	waitFlood(t, e, kind)
}

// waitFlood waits for the relay to count one connection cut off for kind.
func waitFlood(t *testing.T, e *relayEnv, kind string) {
	t.Helper()
	waitUntil(t, 10*time.Second, func() bool { return e.srv.Stats().Floods[kind] == 1 }, func() string {
		return fmt.Sprintf("stats: %+v, want one %s flood", e.srv.Stats(), kind)
	})
}

// A SETTINGS frame with more than 100 settings, or one setting twice, is
// refused as x/net's server refuses it: each INITIAL_WINDOW_SIZE costs a
// pass over the connection's streams, and a 16 KB frame holds 2,730.
func TestOversizedOrDuplicateSettingsAreRefused(t *testing.T) {
	for name, payload := range map[string][]byte{
		"101 settings":                      settingsPayload(101, func(i int) uint16 { return uint16(0x100 + i) }),
		"INITIAL_WINDOW_SIZE twice":         settingsPayload(2, func(int) uint16 { return uint16(http2.SettingInitialWindowSize) }),
		"2,730 INITIAL_WINDOW_SIZE (16 KB)": settingsPayload(2730, func(int) uint16 { return uint16(http2.SettingInitialWindowSize) }),
	} {
		t.Run(name, func(t *testing.T) {
			e := startRelay(t, &forwarder{}, false)
			r := dialRaw(t, e.addr)
			if err := r.fr.WriteRawFrame(http2.FrameSettings, 0, 0, payload); err != nil {
				t.Fatal(err)
			}
			wantCutOff(t, e, r, http2.ErrCodeProtocol, "settings_size")
		})
	}
	// 100 distinct settings are taken.
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	if err := r.fr.WriteRawFrame(http2.FrameSettings, 0, 0, settingsPayload(100, func(i int) uint16 { return uint16(0x100 + i) })); err != nil {
		t.Fatal(err)
	}
	r.headers(1, true, withField(grpcReq, "x-reject", "still served")...)
	r.next(headersOn(1))
}

// settingsPayload is n settings with the ids id(i), each of value 1<<20.
func settingsPayload(n int, id func(int) uint16) []byte {
	var p []byte
	for i := range n {
		p = binary.BigEndian.AppendUint16(p, id(i))
		p = binary.BigEndian.AppendUint32(p, 1<<20)
	}
	return p
}

// SETTINGS frames count against the same budget as pings: a client that
// reads every acknowledgement cannot make the relay process SETTINGS
// frames without end.
func TestSettingsFloodIsStopped(t *testing.T) {
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	for range 2 * DefaultMaxPingsPerSecond {
		if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}); err != nil {
			break
		}
	}
	wantCutOff(t, e, r, http2.ErrCodeEnhanceYourCalm, "settings")
}

// Rejected calls do not buy pings: each makes the relay write response
// headers, which used to reset the ping count (as data did).
func TestPingFloodMixedWithRejectedCallsIsStopped(t *testing.T) {
	e := startRelay(t, &forwarder{}, false)
	r := dialRaw(t, e.addr)
	for i := range 3 * DefaultMaxPingsPerSecond {
		if r.tryHeaders(uint32(2*i+1), true, withField(grpcReq, "x-reject", "no")...) != nil || r.fr.WritePing(false, [8]byte{}) != nil {
			break
		}
	}
	wantCutOff(t, e, r, http2.ErrCodeEnhanceYourCalm, "ping")
}

// grpc-go clients ping on DATA they receive, to size their windows (BDP
// estimation): on a busy stream that is many pings a second. Each DATA
// frame the relay sends buys one ping, so even a limit of 2 a second
// does not cut them off.
func TestGRPCClientBDPPingsAreAllowed(t *testing.T) {
	b := startBackend(t)
	e := startRelay(t, &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}, false,
		func(s *Server) { s.MaxPingsPerSecond = 2 })
	var pings atomic.Int32
	cl := e.dial(t, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		return &pingCounter{Conn: nc, pings: &pings}, err
	}))
	start := time.Now()
	for range 3 {
		var params []*testpb.ResponseParameters
		for range 400 {
			params = append(params, &testpb.ResponseParameters{Size: 16 << 10})
		}
		st, err := cl.StreamingOutputCall(ctxT(t), &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err = st.Recv(); err != nil {
				break
			}
		}
		if !errors.Is(err, io.EOF) {
			t.Fatalf("6 MiB stream with BDP pings: %v", err)
		}
	}
	t.Logf("%d pings in %v", pings.Load(), time.Since(start))
	if n, allowance := pings.Load(), 2+2*time.Since(start).Seconds(); float64(n) <= allowance {
		t.Fatalf("the client sent %d pings, no more than the %.0f the limit allows without DATA: the test proves nothing", n, allowance)
	}
	if st := e.srv.Stats(); len(st.Floods) > 0 || st.Accepted != 1 {
		t.Fatalf("stats %+v: want one connection, never cut off", st)
	}
}

// pingCounter counts the PING frames written on a client's connection
// (h2c: the preface, then whole frames).
type pingCounter struct {
	net.Conn
	pings *atomic.Int32
	buf   []byte
	skip  int // preface bytes still to skip
	init  bool
}

func (c *pingCounter) Write(p []byte) (int, error) {
	if !c.init {
		c.init, c.skip = true, len(http2.ClientPreface)
	}
	c.buf = append(c.buf, p...)
	for {
		if c.skip > 0 {
			n := min(c.skip, len(c.buf))
			c.skip -= n
			c.buf = c.buf[n:]
		}
		if len(c.buf) < frameHeaderLen {
			break
		}
		h := parseFrameHeader(c.buf)
		if len(c.buf) < frameHeaderLen+h.length {
			break
		}
		if h.typ == http2.FramePing && h.flags&http2.FlagPingAck == 0 {
			c.pings.Add(1)
		}
		c.buf = c.buf[frameHeaderLen+h.length:]
	}
	return c.Conn.Write(p)
}

// Every reset a client can provoke counts toward MaxResetsPerSecond,
// whatever the reason: here each way, on its own connection, past the
// limit within a second ends the connection. (The limit is 100 here: some
// ways cost the relay an upstream stream each, and a slow machine under
// -race does not provoke 1,000 of those in a second.)
func TestEveryProvokedResetCounts(t *testing.T) {
	const limit = 100
	b := startBackend(t)
	huge := []byte{0, 0x40, 0, 0, 0} // a message of 1 GiB announced
	cases := map[string]struct {
		configure func(*Server)
		handler   func(t *testing.T) Handler
		provoke   func(r *rawClient, id uint32) error
	}{
		"message over the size limit": {
			configure: func(s *Server) { s.MaxRecvMsgSize = 1 << 20 },
			provoke: func(r *rawClient, id uint32) error {
				if err := r.tryHeaders(id, false, grpcReq...); err != nil {
					return err
				}
				return r.fr.WriteData(id, false, huge)
			},
		},
		"HEADERS on a closed stream": {
			provoke: func(r *rawClient, id uint32) error {
				if id == 1 {
					return r.tryHeaders(1, true, withField(grpcReq, "x-reject", "no")...)
				}
				return r.tryHeaders(1, true, grpcReq...)
			},
		},
		"HTTP error while the client still sends": {
			provoke: func(r *rawClient, id uint32) error {
				return r.tryHeaders(id, false, ":method", "POST", ":scheme", "http", ":path", "/", "content-type", "text/plain")
			},
		},
		"refused stream": {
			configure: func(s *Server) { s.MaxConcurrentStreams = 1 },
			handler:   func(*testing.T) Handler { return stallHandler{} },
			provoke: func(r *rawClient, id uint32) error {
				return r.tryHeaders(id, true, grpcReq...)
			},
		},
		"call rejected after it was sent upstream": {
			handler: func(t *testing.T) Handler {
				// Connected first: a call that waits for the dial is
				// rejected before it is sent upstream, which is no reset.
				up := NewUpstream(b.addr, UpstreamOptions{})
				up.Connect()
				waitUntil(t, 10*time.Second, up.Connected, func() string { return "the upstream never connected" })
				return &rejectAfterForward{up: up}
			},
			provoke: func(r *rawClient, id uint32) error {
				return r.tryHeaders(id, false, grpcReq...)
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var h Handler = &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}
			if tc.handler != nil {
				h = tc.handler(t)
			}
			configure := []func(*Server){func(s *Server) { s.MaxResetsPerSecond = limit }}
			if tc.configure != nil {
				configure = append(configure, tc.configure)
			}
			e := startRelay(t, h, false, configure...)
			r := dialRaw(t, e.addr)
			for i := range 3 * limit {
				if tc.provoke(r, uint32(2*i+1)) != nil {
					break // the relay closed the connection
				}
			}
			wantCutOff(t, e, r, http2.ErrCodeEnhanceYourCalm, "rapid_reset")
		})
	}
}

// rejectAfterForward sends every call upstream, then rejects it.
type rejectAfterForward struct{ up *Upstream }

func (h *rejectAfterForward) ServeCall(c *Call) {
	c.Forward(h.up, c.Headers(), ForwardOptions{})
	c.Reject(codes.PermissionDenied, "changed my mind")
}
func (*rejectAfterForward) AttemptFailed(*Call, Failure) {}
func (*rejectAfterForward) CallDone(*Call)               {}
