// Package h2relay is a gRPC-aware HTTP/2 proxy that relays frames between
// a client's connection and pooled upstream connections, without grpc-go
// stream objects on either side and without decoding messages.
//
// Why not grpc-go or net/http: a pass-through on grpc-go's server and
// client builds two streams per call (header maps, contexts, a goroutine,
// buffers that are copied twice), and net/http's HTTP/2 writes every frame
// on its own. Measured on the project's 2-core machines, either costs
// 2–4× HAProxy's CPU per call (docs/benchmarks.md). Here each connection
// has one reader goroutine that parses frames in place out of its read
// buffer and one writer that sends everything queued for it in one
// write; a call is two stream records and a little state, and a request
// message is copied once, from one connection's read buffer into the
// other's write buffer.
//
// The relay speaks HTTP/2 (RFC 9113) with flow control on both sides
// (data waits for window, and a stream's sender is credited only when its
// bytes have moved on, so memory per stream is bounded by the windows; an
// upstream connection's window is returned at once, so that one client
// that does not read cannot stall others sharing it), HPACK via
// golang.org/x/net/http2/hpack, GOAWAY and graceful drain, keepalive pings
// to upstreams (on a timer of their own), and limits (Limits, limits.go):
// pings and SETTINGS, resets (the client's and every one it provokes),
// queued control frames, header sizes, the bytes queued per connection
// (in bytes, with backpressure on the reader and a stall timeout), and a
// bound on what a client's streams may hold for it. It
// knows enough gRPC to answer with a status (trailers-only), to read the
// status an upstream returns, to hold response headers so a failed
// attempt can be retried elsewhere, and to enforce a message size limit.
package h2relay

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// Server relays the gRPC calls of the HTTP/2 connections it serves.
type Server struct {
	// Handler decides each call. Required.
	Handler Handler
	// Limits bound what each client connection can make the relay spend.
	Limits
	// StreamWindow is the flow-control window per stream. Default 1 MiB.
	StreamWindow uint32
	// ConnWindow is the flow-control window per connection. Default 8 MiB.
	ConnWindow uint32
	// MaxRecvMsgSize bounds one request message; 0: no limit.
	MaxRecvMsgSize int
	// IdleTimeout closes a connection without streams. Default 5 minutes.
	IdleTimeout time.Duration
	// Log receives connection errors at debug level. Default: discard.
	Log *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	stopping bool
	wg       sync.WaitGroup

	// stallTimeout replaces writeStallTimeout in tests.
	stallTimeout time.Duration

	accepted atomic.Uint64
	open     atomic.Int64
	errs     [http2.ErrCodeHTTP11Required + 1]atomic.Uint64 // connections ended for a client's error, by code
	floods   [numFloods]atomic.Uint64                       // connections ended for abuse, by kind
}

// Stats are a server's connection counts.
type Stats struct {
	Open     int64  // client connections open now
	Accepted uint64 // client connections served in all
	// Errors counts connections ended for an error of the client's
	// (the code of the GOAWAY sent: PROTOCOL_ERROR, ENHANCE_YOUR_CALM, …).
	Errors map[http2.ErrCode]uint64
	// Floods counts the connections among those that were cut off for
	// crossing a limit, by kind: rapid_reset, ping, settings,
	// settings_size, control_frames, queued_bytes, write_stall.
	Floods map[string]uint64
}

// Stats returns the server's connection counts.
func (s *Server) Stats() Stats {
	st := Stats{Open: s.open.Load(), Accepted: s.accepted.Load(), Errors: map[http2.ErrCode]uint64{}, Floods: map[string]uint64{}}
	for code := range s.errs {
		if n := s.errs[code].Load(); n > 0 {
			st.Errors[http2.ErrCode(code)] = n
		}
	}
	for kind := range s.floods {
		if n := s.floods[kind].Load(); n > 0 {
			st.Floods[flood(kind).String()] = n
		}
	}
	return st
}

// count records why a client connection ended, if it was the client's
// doing.
func (s *Server) count(err error) {
	var ce connError
	if errors.As(err, &ce) && int(ce.code) < len(s.errs) {
		s.errs[ce.code].Add(1)
	}
	var fe floodError
	if errors.As(err, &fe) {
		s.floods[fe.kind].Add(1)
	}
}

func (s *Server) settings() settings {
	lim := s.Limits.withDefaults()
	set := settings{streamWindow: s.StreamWindow, connWindow: s.ConnWindow, maxStreams: lim.MaxConcurrentStreams, maxHeaderList: lim.MaxHeaderListSize}
	if set.streamWindow == 0 {
		set.streamWindow = 1 << 20
	}
	if set.connWindow == 0 {
		set.connWindow = 8 << 20
	}
	return set
}

func (s *Server) idleTimeout() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return 5 * time.Minute
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Serve serves connections from ln (each starting with the client
// preface) until ln fails or the server stops.
func (s *Server) Serve(ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.wg.Go(func() { s.ServeConn(nc) })
	}
}

// ServeConn serves one connection until it ends.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(nc, false, s.settings(), s.Limits)
	c.srv = s
	if s.stallTimeout > 0 {
		c.stall = s.stallTimeout
	}
	c.start() // our SETTINGS first, before a GracefulStop's GOAWAY
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		c.fail(errors.New("h2relay: server stopped"))
		return
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.accepted.Add(1)
	s.open.Add(1)
	defer s.open.Add(-1)
	c.fail(c.readFrames()) // counts the error that ended the connection
	c.mu.Lock()
	err := c.closeErr
	c.mu.Unlock()
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
		s.log().Debug("client connection ended", "remote", nc.RemoteAddr().String(), "err", err)
	}
}

func (s *Server) connGone(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// GracefulStop sends GOAWAY on every connection, lets their calls
// finish, and returns when all connections have closed.
func (s *Server) GracefulStop() {
	conns := s.stopAccepting()
	for _, c := range conns {
		c.goAway(http2.ErrCodeNo, "server shutting down")
	}
	for _, c := range conns {
		<-c.done
	}
	s.wg.Wait()
}

// Stop closes every connection at once.
func (s *Server) Stop() {
	for _, c := range s.stopAccepting() {
		c.nc.Close()
	}
	s.wg.Wait()
}

// stopAccepting refuses new connections and returns the open ones.
func (s *Server) stopAccepting() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

type request struct{ path, authority string }

// Pseudo-headers of a request, one bit each, to find duplicates.
const (
	hasMethod = 1 << iota
	hasScheme
	hasPath
	hasAuthority
	hasHost
)

// parseRequest checks a request's header fields (RFC 9113 §8.2–8.3) and
// that it is gRPC. status -1 means malformed (RST_STREAM PROTOCOL_ERROR,
// never forwarded); another non-zero status is an HTTP answer to send.
//
// Each pseudo-header appears once: with two :path fields, a handler that
// decides on one while an upstream serves the other is an auth bypass.
func parseRequest(fields []hpack.HeaderField) (r request, status int, msg string) {
	var method, scheme, contentType string
	var seen uint8
	regular := false
	for _, f := range fields {
		var bit uint8
		if strings.HasPrefix(f.Name, ":") {
			if regular {
				return r, -1, "" // pseudo-headers come first
			}
			switch f.Name {
			case ":method":
				bit, method = hasMethod, f.Value
			case ":scheme":
				bit, scheme = hasScheme, f.Value
			case ":path":
				bit, r.path = hasPath, f.Value
			case ":authority":
				bit, r.authority = hasAuthority, f.Value
			default:
				return r, -1, ""
			}
		} else {
			regular = true
			if !validFieldName(f.Name) || !httpguts.ValidHeaderFieldValue(f.Value) {
				return r, -1, ""
			}
			switch f.Name {
			case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
				return r, -1, ""
			case "te":
				if f.Value != "trailers" {
					return r, -1, ""
				}
			case "content-type":
				contentType = f.Value
			case "host":
				bit = hasHost
				if seen&hasAuthority == 0 {
					r.authority = f.Value
				}
			}
		}
		if seen&bit != 0 {
			return r, -1, ""
		}
		seen |= bit
	}
	if seen&(hasMethod|hasScheme|hasPath) != hasMethod|hasScheme|hasPath ||
		!httpguts.ValidHeaderFieldName(method) || !validScheme(scheme) ||
		r.path == "" || r.path[0] != '/' || !validURIPart(r.path, &badInPath) || !validURIPart(r.authority, &badInAuthority) {
		return r, -1, ""
	}
	if !isGRPC(contentType) {
		return r, 415, "invalid gRPC request content-type " + quote(contentType)
	}
	if method != "POST" {
		return r, 405, "gRPC requires POST, not " + method
	}
	return r, 0, ""
}

// validTrailers: a request's trailers carry no pseudo-headers (RFC 9113
// §8.1).
func validTrailers(fields []hpack.HeaderField) bool {
	for _, f := range fields {
		if strings.HasPrefix(f.Name, ":") {
			return false
		}
	}
	return true
}

// Bytes that may not appear in :path (control characters, space, DEL:
// RFC 9113 §8.3.1, RFC 3986) and in :authority (those, and what would end
// the host or carry the deprecated userinfo).
var badInPath, badInAuthority = func() (p, a [256]bool) {
	for c := range 256 {
		p[c] = c <= ' ' || c == 0x7f
		a[c] = p[c] || c == '/' || c == '?' || c == '#' || c == '@'
	}
	return p, a
}()

func validURIPart(s string, bad *[256]bool) bool {
	for i := 0; i < len(s); i++ {
		if bad[s[i]] {
			return false
		}
	}
	return true
}

// validScheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1).
func validScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !letter && (i == 0 || !('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}

// validFieldName: a token, in lower case (upper case is malformed in
// HTTP/2, and letting it through could smuggle a header past a filter).
func validFieldName(name string) bool {
	for i := 0; i < len(name); i++ {
		if c := name[i]; 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return httpguts.ValidHeaderFieldName(name)
}

func isGRPC(ct string) bool {
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

func quote(s string) string { return `"` + s + `"` }

// httpErrorFields answer a request the relay cannot take, as grpc-go's
// server does: an HTTP status with a gRPC status a client can show.
func httpErrorFields(status int, msg string) []hpack.HeaderField {
	code := codes.Internal
	switch status {
	case 415, 405:
		code = codes.Unimplemented
	case 431:
		code = codes.ResourceExhausted
	}
	f := []hpack.HeaderField{{Name: ":status", Value: itoa(status)}, {Name: "content-type", Value: "application/grpc"}}
	return statusFields(f, code, msg)
}
