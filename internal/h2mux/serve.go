package h2mux

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/internal/bulkbuf"
	"golang.org/x/net/http2"
)

// GRPCServer serves the connections whose first request is native gRPC:
// a *grpc.Server, or the gateway's and edge's frame relay.
type GRPCServer interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// Server serves native gRPC on GRPC and everything else on net/http, from
// the same ports.
type Server struct {
	GRPC GRPCServer
	HTTP *http.Server // its Handler serves REST, gRPC-Web, …
	// H2 serves the HTTP/2 connections that are not gRPC. x/net's server is
	// used (deprecated in favour of net/http's) because it alone serves a
	// connection whose first bytes were already read: net/http would need
	// the TLS state it can no longer see.
	//
	// Its SETTINGS are what every HTTP/2 connection is sent first, before
	// its first request decides which server takes it; values that the
	// GRPC server does not restate in its own SETTINGS stay in force on its
	// connections and must suit it. Default: idle timeout 5 minutes, 1000
	// concurrent streams, frames up to 16 KiB (the relay reads no larger),
	// stream windows of 64 KiB (grpc-go's default, which it does not state;
	// the relay states its own).
	H2 *http2.Server //lint:ignore SA1019 see above
	// TLS, when set, is used on listeners served with ServeTLS.
	TLS *tls.Config
	// BatchBuffers lends the buffers in which a large HTTP/2 or gRPC write
	// on a TLS connection gathers its records, to send them with one
	// syscall instead of one each (see recordBatcher). Nil, or its budget
	// spent: a syscall per record.
	BatchBuffers *bulkbuf.Pool
	// PreludeLimits bound an HTTP/2 connection before its first request.
	PreludeLimits

	once         sync.Once
	settings     []byte // H2's first SETTINGS frame
	maxFrameSize uint32 // its SETTINGS_MAX_FRAME_SIZE
	grpcL        *chanListener
	httpL        *chanListener
	conns        sync.Map // connections not yet handed to a server, and hijacked HTTP/2 ones: closed at Shutdown
	wg           sync.WaitGroup
	closed       chan struct{}
}

func (s *Server) init() {
	s.once.Do(func() {
		s.grpcL = newChanListener(&net.TCPAddr{})
		s.httpL = newChanListener(&net.TCPAddr{})
		s.closed = make(chan struct{})
		if s.H2 == nil {
			//lint:ignore SA1019 see Server.H2
			s.H2 = &http2.Server{IdleTimeout: 5 * time.Minute, MaxConcurrentStreams: 1000, MaxReadFrameSize: defaultMaxFrameSize, MaxUploadBufferPerStream: initialWindow}
		}
		_ = http2.ConfigureServer(s.HTTP, s.H2) //lint:ignore SA1019 see Server.H2
		s.settings = h2Settings(s.H2, s.HTTP)
		s.maxFrameSize = defaultMaxFrameSize
		if f, err := http2.NewFramer(nil, bytes.NewReader(s.settings)).ReadFrame(); err == nil {
			if v, ok := f.(*http2.SettingsFrame).Value(http2.SettingMaxFrameSize); ok {
				s.maxFrameSize = v // clients may send frames as large as these SETTINGS allow
			}
		}
		s.wg.Go(func() { _ = s.GRPC.Serve(s.grpcL) })
		s.wg.Go(func() { _ = s.HTTP.Serve(s.httpL) })
	})
}

// ServeTLS accepts TLS connections (h2 and http/1.1 by ALPN) until ln
// closes. Requests get ctx's values; its end cancels none of them.
func (s *Server) ServeTLS(ctx context.Context, ln net.Listener) {
	s.serve(ln, func(c net.Conn) { s.route(ctx, c, true) })
}

// ServeH2C accepts cleartext HTTP/2 connections (prior knowledge).
func (s *Server) ServeH2C(ctx context.Context, ln net.Listener) {
	s.serve(ln, func(c net.Conn) { s.route(ctx, c, false) })
}

// ServeHTTP1 accepts cleartext HTTP/1.x connections.
func (s *Server) ServeHTTP1(ln net.Listener) {
	s.serve(ln, func(c net.Conn) { s.conns.Delete(c); s.httpL.put(c) })
}

func (s *Server) serve(ln net.Listener, handle func(net.Conn)) {
	s.init()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.conns.Store(c, struct{}{}) // until handed to a server
		s.wg.Go(func() { handle(c) })
	}
}

// route hands a connection to the server its first bytes call for. ctx
// gives requests its values but not its end: the gateway and the edge end
// it when they begin to drain, and keep serving meanwhile — requests in
// flight, new ones on open connections, and new connections, until
// Shutdown ends them gracefully.
func (s *Server) route(ctx context.Context, c net.Conn, isTLS bool) {
	ctx = context.WithoutCancel(ctx)
	raw := c
	defer s.conns.Delete(raw)
	var batcher *recordBatcher // HTTP/2 and gRPC writes only: net/http's HTTP/1 server needs the *tls.Conn itself
	if isTLS {
		batcher = newRecordBatcher(c, s.BatchBuffers)
		tc := tls.Server(batcher, s.TLS)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			c.Close()
			return
		}
		if tc.ConnectionState().NegotiatedProtocol != "h2" {
			s.httpL.put(tc)
			return
		}
		c = tc
	}
	h, err := classify(c, s.preludeLimits())
	if err != nil {
		c.Close()
		return
	}
	if h.isGRPC {
		s.grpcL.put(grpcConn(c, h, batcher))
		return
	}
	rc := h2Conn(c, h, s.settings, batcher)
	s.conns.Store(rc, struct{}{})
	defer s.conns.Delete(rc)
	s.H2.ServeConn(rc, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.HTTP, Handler: s.HTTP.Handler, //lint:ignore SA1019 see Server.H2
		SawClientPreface: true, Settings: h.settingsPayload()})
}

func (s *Server) preludeLimits() preludeLimits {
	l := preludeLimits{timeout: s.FirstRequestTimeout, maxFrames: s.MaxFramesBeforeRequest, settings: s.settings, maxFrameSize: s.maxFrameSize}
	if l.timeout <= 0 {
		l.timeout = DefaultFirstRequestTimeout
	}
	if l.maxFrames <= 0 {
		l.maxFrames = DefaultMaxFramesBeforeRequest
	}
	return l
}

// Shutdown stops both servers gracefully (forcefully after timeout) and
// closes hijacked connections. Close the listeners first.
func (s *Server) Shutdown(timeout time.Duration) {
	s.init()
	done := make(chan struct{})
	go func() {
		s.GRPC.GracefulStop()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = s.HTTP.Shutdown(ctx)
		close(done)
	}()
	t := time.NewTimer(timeout + time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.GRPC.Stop()
		_ = s.HTTP.Close()
	}
	s.conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
	s.grpcL.Close()
	s.httpL.Close()
	s.wg.Wait()
}

// h2Settings returns the SETTINGS frame that h2 sends first on a
// connection served with base, as it wrote it on a pipe: this follows
// x/net's choices, whatever its version. If that fails (it does not),
// SETTINGS that x/net's will differ from, so that they are not dropped.
//
//lint:ignore SA1019 see Server.H2
func h2Settings(h2 *http2.Server, base *http.Server) []byte {
	client, server := net.Pipe()
	defer client.Close()
	go h2.ServeConn(server, &http2.ServeConnOpts{BaseConfig: base, Handler: http.NotFoundHandler()}) //lint:ignore SA1019 see Server.H2
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	fr := http2.NewFramer(nil, client)
	if f, err := fr.ReadFrame(); err == nil {
		if sf, ok := f.(*http2.SettingsFrame); ok && !sf.IsAck() {
			var b bytes.Buffer
			var s []http2.Setting
			_ = sf.ForeachSetting(func(v http2.Setting) error { s = append(s, v); return nil })
			_ = http2.NewFramer(&b, nil).WriteSettings(s...)
			return b.Bytes()
		}
	}
	var b bytes.Buffer
	_ = http2.NewFramer(&b, nil).WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 250},
		http2.Setting{ID: settingNoRFC7540Priorities, Val: 1})
	return b.Bytes()
}

// ExtendedConnect reports whether HTTP/2 connections are told that they
// may open WebSockets with extended CONNECT (RFC 8441): x/net's server
// announces it when GODEBUG has http2xconnect=1 at start (see
// internal/xconnect).
func ExtendedConnect() bool {
	b := h2Settings(&http2.Server{}, &http.Server{}) //lint:ignore SA1019 see Server.H2
	f, err := http2.NewFramer(nil, bytes.NewReader(b)).ReadFrame()
	if err != nil {
		return false
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		return false
	}
	v, ok := sf.Value(http2.SettingEnableConnectProtocol)
	return ok && v == 1
}
