package h2relay

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// backend is a real grpc-go server on loopback (h2c).
type backend struct {
	addr string
	srv  *grpc.Server
	svc  *testservice.Service
}

func startBackend(t *testing.T, opts ...grpc.ServerOption) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String(), srv: grpc.NewServer(opts...),
		svc: &testservice.Service{Fill: 'x', Canceled: make(chan struct{}), Block: make(chan struct{})}}
	testpb.RegisterTestServiceServer(b.srv, b.svc)
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// waitBlocked waits until n "block" calls wait in the backend.
func waitBlocked(t *testing.T, b *backend, n int32) {
	t.Helper()
	waitUntil(t, 10*time.Second, func() bool { return b.svc.Blocked.Load() == n }, func() string {
		return fmt.Sprintf("%d calls wait in the backend, want %d", b.svc.Blocked.Load(), n)
	})
}

// forwarder is the simplest Handler: every call to ups[0], retries on the
// next upstream when allowed.
type forwarder struct {
	ups      []*Upstream
	opts     ForwardOptions
	retry    func(f Failure) bool // nil: never retry
	add      bool                 // add x-added: yes
	done     chan *Call
	failures chan Failure
}

func (h *forwarder) ServeCall(c *Call) {
	if c.Header("x-reject") != "" {
		c.Reject(codes.PermissionDenied, "rejected: "+c.Header("x-reject"), hpackField("retry-after", "7"))
		return
	}
	fields := c.Headers()
	if h.add {
		fields = append(append(fields[:0:0], fields...), hpackField("x-added", "yes"))
	}
	c.UserData = new(int)
	c.Forward(h.ups[0], fields, h.opts)
}

func (h *forwarder) AttemptFailed(c *Call, f Failure) {
	if h.failures != nil {
		h.failures <- f
	}
	n := c.UserData.(*int)
	*n++
	if h.retry != nil && h.retry(f) && *n < len(h.ups) && c.Replayable() {
		c.Forward(h.ups[*n], c.Headers(), h.opts)
	}
}

func (h *forwarder) CallDone(c *Call) {
	if h.done != nil {
		h.done <- c
	}
}

type relayEnv struct {
	srv  *Server
	addr string
	cert tls.Certificate
	pool *x509.CertPool
}

// startRelay serves h on loopback; configure, if any, sets the server's
// fields before it serves.
func startRelay(t *testing.T, h Handler, tlsOn bool, configure ...func(*Server)) *relayEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &relayEnv{srv: &Server{Handler: h}, addr: ln.Addr().String()}
	for _, f := range configure {
		f(e.srv)
	}
	if tlsOn {
		e.cert, e.pool = testcert.Server(t)
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{e.cert}, NextProtos: []string{"h2"}})
	}
	go func() { _ = e.srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); e.srv.Stop() })
	return e
}

func (e *relayEnv) dial(t *testing.T, opts ...grpc.DialOption) testpb.TestServiceClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if e.pool != nil {
		creds = credentials.NewTLS(&tls.Config{RootCAs: e.pool, ServerName: "localhost"})
	}
	cc, err := grpc.NewClient(e.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAllStreamingKindsOverTLS(t *testing.T) {
	b := startBackend(t)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}, add: true}
	cl := startRelay(t, h, true).dial(t)
	ctx := ctxT(t)

	// Unary: metadata both ways, deadline, trailers.
	var hdr, tr metadata.MD
	mctx := metadata.AppendToOutgoingContext(ctx, "x-custom", "c1")
	dctx, cancel := context.WithTimeout(mctx, 5*time.Second)
	defer cancel()
	resp, err := cl.UnaryCall(dctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Header(&hdr), grpc.Trailer(&tr))
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.GetPayload().GetBody()) != "hello" {
		t.Errorf("payload = %q", resp.GetPayload().GetBody())
	}
	if got := hdr.Get("seen-custom"); len(got) != 1 || got[0] != "c1" {
		t.Errorf("backend saw x-custom = %v, want c1", got)
	}
	if got := hdr.Get("seen-added"); len(got) != 1 || got[0] != "yes" {
		t.Errorf("backend saw x-added = %v, want the handler's field", got)
	}
	if got := hdr.Get("seen-deadline"); len(got) != 1 {
		t.Errorf("backend saw no deadline (grpc-timeout not relayed)")
	}
	if got := tr.Get("trailer-x"); len(got) != 1 || got[0] != "t" {
		t.Errorf("trailer-x = %v", got)
	}

	// Error with details survives.
	_, err = cl.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "nope ✗ 100%"}})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "nope ✗ 100%" {
		t.Fatalf("status = %v %q", st.Code(), st.Message())
	}
	if len(st.Details()) != 1 {
		t.Errorf("details = %v, want the ErrorInfo", st.Details())
	}

	// Server streaming, larger than every window on the way.
	ss, err := cl.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{
		{Size: 10}, {Size: 3 << 20}, {Size: 1}, {Size: 2 << 20}}})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		m, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(m.GetPayload().GetBody()))
	}
	if want := []int{10, 3 << 20, 1, 2 << 20}; !equalInts(sizes, want) {
		t.Errorf("stream sizes = %v, want %v", sizes, want)
	}

	// Client streaming, 9 MiB in all (past the connection window).
	cs, err := cl.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 9 {
		if err := cs.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, 1<<20)}}); err != nil {
			t.Fatal(err)
		}
	}
	agg, err := cs.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if agg.GetAggregatedPayloadSize() != 9<<20 {
		t.Errorf("aggregated = %d", agg.GetAggregatedPayloadSize())
	}

	// Bidi, ping-pong.
	bs, err := cl.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i * 1000)}}}); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.GetPayload().GetBody()) != i*1000 {
			t.Fatalf("bidi %d: %d bytes", i, len(m.GetPayload().GetBody()))
		}
	}
	_ = bs.CloseSend()
	if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v", err)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func hpackField(name, value string) HeaderField { return HeaderField{Name: name, Value: value} }

func TestConcurrentCallsH2C(t *testing.T) {
	b := startBackend(t)
	done := make(chan *Call, 2000)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}, done: done}
	cl := startRelay(t, h, false).dial(t)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for w := range 50 {
		wg.Go(func() {
			for i := range 40 {
				body := bytes.Repeat([]byte{byte(w)}, 1000+i*37)
				r, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
				if err != nil || !bytes.Equal(r.GetPayload().GetBody(), body) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of 2000 calls failed or came back wrong", n)
	}
	for range 2000 {
		c := <-done
		if code, _ := c.Result(); code != codes.OK {
			t.Fatalf("CallDone code = %v", code)
		}
	}
}

func TestRejectAndRespond(t *testing.T) {
	b := startBackend(t)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}
	cl := startRelay(t, h, true).dial(t)
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "x-reject", "because")
	var hdr, tr metadata.MD
	_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&tr))
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "rejected: because" {
		t.Fatalf("status = %v %q", st.Code(), st.Message())
	}
	if got := tr.Get("retry-after"); len(got) != 1 || got[0] != "7" {
		t.Errorf("retry-after = %v, want 7 with the trailers-only answer", got)
	}
}

// respondHandler answers every call itself.
type respondHandler struct{ msg []byte }

func (h respondHandler) ServeCall(c *Call)          { c.Respond(h.msg) }
func (respondHandler) AttemptFailed(*Call, Failure) {}
func (respondHandler) CallDone(*Call)               {}

func TestRespond(t *testing.T) {
	want := &testpb.SimpleResponse{Username: "local"}
	msg, _ := protoMarshal(want)
	cl := startRelay(t, respondHandler{msg}, false).dial(t)
	for range 3 {
		r, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 100)}})
		if err != nil || r.GetUsername() != "local" {
			t.Fatalf("Respond: %v %v", r, err)
		}
	}
}

func TestClientCancelReachesUpstream(t *testing.T) {
	b := startBackend(t)
	done := make(chan *Call, 1)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}, done: done}
	cl := startRelay(t, h, false).dial(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, err := cl.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("block")}})
		errc <- err
	}()
	waitBlocked(t, b, 1)
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("client: %v", err)
	}
	select {
	case <-b.svc.Canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never saw the cancellation")
	}
	c := <-done
	if code, _ := c.Result(); code != codes.Canceled {
		t.Errorf("CallDone code = %v, want Canceled", code)
	}
}

func TestUpstreamDownFailsFastAsNotReached(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	fails := make(chan Failure, 10)
	h := &forwarder{ups: []*Upstream{NewUpstream(dead, UpstreamOptions{})}, failures: fails}
	cl := startRelay(t, h, false).dial(t)
	for range 3 {
		start := time.Now()
		_, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("dead upstream: %v, want Unavailable", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v to fail", d)
		}
		if f := <-fails; f.Reached {
			t.Errorf("failure %+v: a refused connection never reached the upstream", f)
		}
	}
}

func TestRetryOnAnotherUpstream(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	b := startBackend(t)
	h := &forwarder{ups: []*Upstream{NewUpstream(dead, UpstreamOptions{}), NewUpstream(b.addr, UpstreamOptions{})},
		opts: ForwardOptions{RetryBuffer: 1 << 20, HoldHeaders: true}, retry: func(f Failure) bool { return !f.Reached }}
	cl := startRelay(t, h, false).dial(t)
	body := bytes.Repeat([]byte("r"), 200<<10) // several DATA frames, all replayed
	r, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
	if err != nil || !bytes.Equal(r.GetPayload().GetBody(), body) {
		t.Fatalf("retried call: %v", err)
	}
}

// unavailableOnce answers its first call UNAVAILABLE (trailers-only).
func TestHoldHeadersRetriesTrailersOnlyUnavailable(t *testing.T) {
	var n atomic.Int32
	flaky := startBackend(t, grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if n.Add(1) == 1 {
			return nil, status.Error(codes.Unavailable, "warming up")
		}
		return next(ctx, req)
	}))
	good := startBackend(t)
	fails := make(chan Failure, 4)
	h := &forwarder{ups: []*Upstream{NewUpstream(flaky.addr, UpstreamOptions{}), NewUpstream(good.addr, UpstreamOptions{})},
		opts: ForwardOptions{RetryBuffer: 1 << 20, HoldHeaders: true}, failures: fails,
		retry: func(f Failure) bool { return f.Code == codes.Unavailable }}
	cl := startRelay(t, h, false).dial(t)
	r, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("x")}})
	if err != nil || string(r.GetPayload().GetBody()) != "x" {
		t.Fatalf("call: %v", err)
	}
	if f := <-fails; f.Code != codes.Unavailable || f.Message != "warming up" || !f.Reached {
		t.Errorf("failure = %+v", f)
	}
	// Without HoldHeaders the same answer goes straight to the client.
	n.Store(0)
	h.opts.HoldHeaders = false
	_, err = cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("unheld: %v, want the upstream's Unavailable", err)
	}
}

func TestUpstreamKilledMidStream(t *testing.T) {
	b := startBackend(t)
	done := make(chan *Call, 4)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}, done: done}
	cl := startRelay(t, h, false).dial(t)
	ctx := ctxT(t)
	bs, err := cl.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bs.Recv(); err != nil {
		t.Fatal(err)
	}
	b.srv.Stop() // closes the connection under the stream
	_, err = bs.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("after the upstream died: %v, want Unavailable", err)
	}
	if code, _ := (<-done).Result(); code != codes.Unavailable {
		t.Errorf("CallDone code = %v", code)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	b := startBackend(t)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}
	e := startRelay(t, h, false)
	e.srv.MaxRecvMsgSize = 64 << 10
	cl := e.dial(t)
	if _, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 60<<10)}}); err != nil {
		t.Fatalf("under the limit: %v", err)
	}
	_, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, 70<<10)}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over the limit: %v, want ResourceExhausted", err)
	}
	if _, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatalf("the connection should still serve: %v", err)
	}
}

func TestGracefulStopFinishesCalls(t *testing.T) {
	b := startBackend(t)
	h := &forwarder{ups: []*Upstream{NewUpstream(b.addr, UpstreamOptions{})}}
	e := startRelay(t, h, false)
	cl := e.dial(t)
	if _, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := cl.UnaryCall(ctxT(t), &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("block")}})
		errc <- err
	}()
	waitBlocked(t, b, 1)
	stopped := make(chan struct{})
	go func() { e.srv.GracefulStop(); close(stopped) }()
	// Nothing marks "still waiting": GracefulStop is given 300 ms to
	// return too early.
	select {
	case <-stopped:
		t.Fatal("GracefulStop returned with a call in flight")
	case <-time.After(300 * time.Millisecond):
	}
	close(b.svc.Block)
	if err := <-errc; err != nil {
		t.Fatalf("in-flight call during graceful stop: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("GracefulStop did not return after the last call")
	}
}
