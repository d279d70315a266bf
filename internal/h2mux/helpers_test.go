package h2mux

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testservice"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// restHandler serves /size/N (N bytes of 'x'), /echo (the body back) and
// /tls ("tls" or "clear", as net/http saw the connection).
func restHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/size/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		_, _ = w.Write(bytes.Repeat([]byte{'x'}, n))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	mux.HandleFunc("/tls", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			_, _ = io.WriteString(w, "tls")
			return
		}
		_, _ = io.WriteString(w, "clear")
	})
	return mux
}

func newGRPCServer(t *testing.T) *grpc.Server {
	t.Helper()
	g := grpc.NewServer()
	testpb.RegisterTestServiceServer(g, &testservice.Service{})
	healthpb.RegisterHealthServer(g, health.NewServer())
	return g
}

// relayTo returns a frame relay that forwards every call to a grpc-go
// server on loopback: the gateway's and the edge's GRPC server.
func relayTo(t *testing.T) *h2relay.Server {
	t.Helper()
	g := newGRPCServer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	up := h2relay.NewUpstream(ln.Addr().String(), h2relay.UpstreamOptions{})
	t.Cleanup(up.Close)
	return &h2relay.Server{Handler: forwardAll{up}}
}

type forwardAll struct{ up *h2relay.Upstream }

func (f forwardAll) ServeCall(c *h2relay.Call) {
	c.Forward(f.up, c.Headers(), h2relay.ForwardOptions{})
}
func (forwardAll) AttemptFailed(*h2relay.Call, h2relay.Failure) {}
func (forwardAll) CallDone(*h2relay.Call)                       {}

// testMux is a Server on loopback, h2c and TLS.
type testMux struct {
	srv      *Server
	h2c, tls string
	roots    *x509.CertPool
	accepted atomic.Int64 // connections accepted on either listener
}

type muxOpt func(*Server)

func withGRPC(g GRPCServer) muxOpt { return func(s *Server) { s.GRPC = g } }

func startMux(t *testing.T, opts ...muxOpt) *testMux {
	t.Helper()
	cert, roots := testcert.Server(t)
	m := &testMux{roots: roots}
	m.srv = &Server{HTTP: &http.Server{Handler: restHandler(), ErrorLog: log.New(io.Discard, "", 0)},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	for _, o := range opts {
		o(m.srv)
	}
	if m.srv.GRPC == nil {
		m.srv.GRPC = newGRPCServer(t)
	}
	h2c, tl := m.listen(t), m.listen(t)
	m.h2c, m.tls = h2c.Addr().String(), tl.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { m.srv.ServeH2C(ctx, h2c); done <- struct{}{} }()
	go func() { m.srv.ServeTLS(ctx, tl); done <- struct{}{} }()
	t.Cleanup(func() {
		h2c.Close()
		tl.Close()
		<-done
		<-done
		cancel()
		m.srv.Shutdown(time.Second)
	})
	return m
}

// listen returns a loopback listener that counts accepted connections.
func (m *testMux) listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return countingListener{ln, &m.accepted}
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// rawConn is an HTTP/2 client connection driven frame by frame.
type rawConn struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
}

// dialRaw connects over h2c (tlsRoots nil) or TLS; every read and write
// must finish within 10 s.
func dialRaw(t *testing.T, addr string, tlsRoots *x509.CertPool) *rawConn {
	t.Helper()
	var c net.Conn
	var err error
	if tlsRoots != nil {
		c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: tlsRoots, NextProtos: []string{"h2"}})
	} else {
		c, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawConn{t: t, c: c}
	r.fr = http2.NewFramer(c, c)
	r.fr.AllowIllegalWrites = true
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.fr.SetMaxReadFrameSize(1 << 20)
	r.enc = hpack.NewEncoder(&r.buf)
	return r
}

// start sends the client preface and a SETTINGS frame.
func (r *rawConn) start(s ...http2.Setting) *rawConn {
	r.t.Helper()
	if _, err := io.WriteString(r.c, http2.ClientPreface); err != nil {
		r.t.Fatal(err)
	}
	r.check(r.fr.WriteSettings(s...))
	return r
}

func (r *rawConn) check(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

// readUntil reads frames until one satisfies want, and returns them all.
func (r *rawConn) readUntil(what string, want func(http2.Frame) bool) []http2.Frame {
	r.t.Helper()
	var seen []http2.Frame
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v (after %s)", what, err, summary(seen))
		}
		seen = append(seen, copyFrame(f))
		if want(f) {
			return seen
		}
	}
}

// copyFrame keeps what the tests look at of a frame beyond the next read.
func copyFrame(f http2.Frame) http2.Frame {
	switch f := f.(type) {
	case *http2.DataFrame:
		return &dataCopy{f.FrameHeader, bytes.Clone(f.Data())}
	case *http2.GoAwayFrame:
		return &goAwayCopy{f.FrameHeader, f.LastStreamID, f.ErrCode, string(f.DebugData())}
	case *http2.SettingsFrame:
		var s []http2.Setting
		_ = f.ForeachSetting(func(v http2.Setting) error { s = append(s, v); return nil })
		return &settingsCopy{f.FrameHeader, s}
	}
	return f
}

type dataCopy struct {
	http2.FrameHeader
	data []byte
}

type goAwayCopy struct {
	http2.FrameHeader
	LastStreamID uint32
	code         http2.ErrCode
	debug        string
}

type settingsCopy struct {
	http2.FrameHeader
	settings []http2.Setting
}

func summary(fs []http2.Frame) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.Header().String())
		b.WriteString("; ")
	}
	return b.String()
}

func isSettingsAck(f http2.Frame) bool {
	return f.Header().Type == http2.FrameSettings && f.Header().Flags.Has(http2.FlagSettingsAck)
}

// expectGoAway reads until the server's GOAWAY and checks its code.
func (r *rawConn) expectGoAway(code http2.ErrCode) {
	r.t.Helper()
	fs := r.readUntil("GOAWAY "+code.String(), func(f http2.Frame) bool { return f.Header().Type == http2.FrameGoAway })
	g := fs[len(fs)-1].(*goAwayCopy)
	if g.code != code {
		r.t.Fatalf("GOAWAY %v (%q), want %v", g.code, g.debug, code)
	}
	if g.StreamID != 0 || g.LastStreamID != 0 {
		r.t.Errorf("GOAWAY on stream %d, last stream %d; want 0 and 0 (no stream was processed)", g.StreamID, g.LastStreamID)
	}
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

func hpackField(name, value string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: value}
}

// request sends a GET (or a gRPC health check) on stream id.
func (r *rawConn) request(id uint32, path string, grpc bool) {
	r.t.Helper()
	r.buf.Reset()
	fields := []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "127.0.0.1"}}
	if grpc {
		fields[0].Value = "POST"
		fields = append(fields, hpack.HeaderField{Name: "content-type", Value: "application/grpc"},
			hpack.HeaderField{Name: "te", Value: "trailers"})
	}
	for _, f := range fields {
		r.check(r.enc.WriteField(f))
	}
	r.check(r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndHeaders: true, EndStream: !grpc}))
	if grpc {
		r.check(r.fr.WriteData(id, true, []byte{0, 0, 0, 0, 0})) // an empty HealthCheckRequest
	}
}

// response reads until stream id ends and returns its body and the
// frames read.
func (r *rawConn) response(id uint32) (body []byte, frames []http2.Frame) {
	r.t.Helper()
	frames = r.readUntil("the end of stream "+strconv.Itoa(int(id)), func(f http2.Frame) bool {
		if f.Header().Type == http2.FrameRSTStream && f.Header().StreamID == id {
			r.t.Fatalf("stream %d reset: %v", id, f.(*http2.RSTStreamFrame).ErrCode)
		}
		if f.Header().Type == http2.FrameGoAway {
			r.t.Fatalf("GOAWAY %v (%q) instead of a response", f.(*http2.GoAwayFrame).ErrCode, f.(*http2.GoAwayFrame).DebugData())
		}
		return f.Header().StreamID == id && f.Header().Flags.Has(http2.FlagDataEndStream)
	})
	for _, f := range frames {
		if d, ok := f.(*dataCopy); ok && d.StreamID == id {
			body = append(body, d.data...)
		}
	}
	return body, frames
}

func count(fs []http2.Frame, match func(http2.Frame) bool) int {
	n := 0
	for _, f := range fs {
		if match(f) {
			n++
		}
	}
	return n
}
