package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testservice"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

// descriptorSet writes the TestService's FileDescriptorSet, as
// `protoc --include_imports --descriptor_set_out` would.
func descriptorSet(t *testing.T) string {
	fd := testpb.File_grpc_testing_test_proto
	set := &descriptorpb.FileDescriptorSet{}
	imports := fd.Imports()
	for i := 0; i < imports.Len(); i++ {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(imports.Get(i).FileDescriptor))
	}
	set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "test.pb")
	_ = os.WriteFile(p, b, 0o644)
	return p
}

func TestPassThroughAllStreamingKinds(t *testing.T) {
	is := newIssuer(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer() // no reflection: REST routes come from --descriptor
	testpb.RegisterTestServiceServer(srv, &testservice.Service{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cfg := filepath.Join(t.TempDir(), "svc.yaml")
	_ = os.WriteFile(cfg, []byte(`type: google.api.Service
name: test.example.com
apis: [{name: grpc.testing.TestService}]
usage:
  rules: [{selector: "*", allow_unregistered_calls: true}]
authentication:
  providers: [{id: p, issuer: "`+is.url()+`", jwks_uri: "`+is.url()+`/jwks"}]
  rules: [{selector: "*", requirements: [{provider_id: p}]}]
http:
  rules:
  - {selector: grpc.testing.TestService.UnaryCall, post: /v1/unary, body: "*"}
  - {selector: grpc.testing.TestService.StreamingOutputCall, post: "/v1/stream", body: "*"}
`), 0o644)
	dir, roots := testcert.Dir(t)
	var access syncBuffer
	g, err := New(Options{ServiceConfig: cfg, Backend: "grpc://" + ln.Addr().String(), Descriptor: descriptorSet(t),
		SSLAddr: "127.0.0.1:0", CertDir: dir, Log: slog.New(slog.DiscardHandler), AccessLog: &access})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(g.Addr("ssl"), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := testpb.NewTestServiceClient(conn)
	tok := is.token(t, "alice", withAud("https://test.example.com"))
	call := func(d time.Duration) (context.Context, context.CancelFunc) {
		c, cancel := context.WithTimeout(context.Background(), d)
		return metadata.AppendToOutgoingContext(c, "authorization", "Bearer "+tok, "x-custom", "v1", "x-forwarded-for", "10.1.2.3",
			"x-endpoint-other", "spoof", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), cancel
	}

	// Unary: metadata, deadline, identity in; headers and trailers out.
	c, cancelCall := call(2 * time.Second)
	var hdr, tr metadata.MD
	resp, err := cl.UnaryCall(c, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Header(&hdr), grpc.Trailer(&tr))
	cancelCall()
	if err != nil || string(resp.GetPayload().GetBody()) != "hello" {
		t.Fatalf("unary: %v", err)
	}
	// Regression: messages of 1 KiB and more (pooled buffers) were freed
	// once too often by the pass-through codec and crashed the gateway.
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		body := bytes.Repeat([]byte{'p'}, size)
		c, cancelCall := call(10 * time.Second)
		resp, err := cl.UnaryCall(c, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
		cancelCall()
		if err != nil || !bytes.Equal(resp.GetPayload().GetBody(), body) {
			t.Fatalf("unary of %d bytes: %v", size, err)
		}
	}
	if hdr.Get("seen-custom")[0] != "v1" || hdr.Get("seen-userinfo")[0] == "" || tr.Get("trailer-x")[0] != "t" {
		t.Fatalf("metadata not carried: header %v trailer %v", hdr, tr)
	}
	// The client's address is appended to X-Forwarded-For; X-Endpoint-*
	// headers from the client never reach the backend.
	if xff := hdr.Get("seen-xff")[0]; xff != "10.1.2.3, 127.0.0.1" || hdr.Get("seen-other")[0] != "" {
		t.Fatalf("backend saw X-Forwarded-For %q, X-Endpoint-Other %q", xff, hdr.Get("seen-other")[0])
	}
	// The access log names the call, its status and its trace.
	waitFor(t, func() bool {
		return strings.Contains(access.String(), `"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736`)
	}, "access log line")
	if line := access.String(); !strings.Contains(line, `"method":"/grpc.testing.TestService/UnaryCall"`) || !strings.Contains(line, `"code":"OK"`) {
		t.Fatalf("access log: %s", line)
	}
	if ms, err := strconv.Atoi(hdr.Get("seen-deadline-ms")[0]); err != nil || ms <= 1000 || ms > 2000 {
		t.Fatalf("backend saw a deadline of %v ms; want the client's 2 s, less transit", hdr.Get("seen-deadline-ms"))
	}
	// Status details survive, untouched.
	c, cancelCall = call(2 * time.Second)
	_, err = cl.UnaryCall(c, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "nope"}})
	cancelCall()
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 || st.Details()[0].(*errdetails.ErrorInfo).GetReason() != "TEST_REASON" {
		t.Fatalf("status details: %v %v", st, st.Details())
	}
	// Server streaming.
	c, cancelCall = call(5 * time.Second)
	ss, err := cl.StreamingOutputCall(c, &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 2}, {Size: 3}}})
	n := 0
	for err == nil {
		var m *testpb.StreamingOutputCallResponse
		if m, err = ss.Recv(); err == nil {
			n += len(m.GetPayload().GetBody())
		}
	}
	cancelCall()
	if !errors.Is(err, io.EOF) || n != 6 {
		t.Fatalf("server streaming: %d bytes, %v", n, err)
	}
	// Client streaming.
	c, cancelCall = call(5 * time.Second)
	cs, _ := cl.StreamingInputCall(c)
	for _, size := range []int{10, 20, 30} {
		_ = cs.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, size)}})
	}
	agg, err := cs.CloseAndRecv()
	cancelCall()
	if err != nil || agg.GetAggregatedPayloadSize() != 60 {
		t.Fatalf("client streaming: %v %v", agg, err)
	}
	// Bidirectional, in lock step: proves messages flow before half-close.
	c, cancelCall = call(5 * time.Second)
	bs, _ := cl.FullDuplexCall(c)
	for i := 1; i <= 3; i++ {
		if err := bs.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i)}}}); err != nil {
			t.Fatal(err)
		}
		m, err := bs.Recv()
		if err != nil || len(m.GetPayload().GetBody()) != i {
			t.Fatalf("bidi round %d: %v", i, err)
		}
	}
	_ = bs.CloseSend()
	if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v", err)
	}
	cancelCall()
	// REST from --descriptor, with no reflection on the backend.
	hc := newGWClient(roots)
	r := doReq(t, hc, "POST", "https://"+g.Addr("ssl")+"/v1/unary", tok, `{"payload":{"body":"aGk="}}`)
	if r.code != 200 || !strings.Contains(r.body, `"aGk="`) {
		t.Fatalf("REST via --descriptor: %d %s", r.code, r.body)
	}
	r = doReq(t, hc, "POST", "https://"+g.Addr("ssl")+"/v1/unary", tok, `{"responseStatus":{"code":9,"message":"nope"}}`)
	if r.code != 400 || !strings.Contains(r.body, "TEST_REASON") || !strings.Contains(r.body, `"status":"FAILED_PRECONDITION"`) {
		t.Fatalf("REST error with details: %d %s", r.code, r.body)
	}
	r = doReq(t, hc, "POST", "https://"+g.Addr("ssl")+"/v1/stream", tok, `{"responseParameters":[{"size":1},{"size":2}]}`)
	if r.code != 200 || !strings.HasPrefix(r.body, "[") || strings.Count(r.body, "payload") != 2 {
		t.Fatalf("REST stream as a JSON array: %d %s", r.code, r.body)
	}
}

// A grpcs:// backend: TLS to the backend, verified with --backend_ca.
func TestTLSBackend(t *testing.T) {
	dir, _ := testcert.Dir(t)
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	testpb.RegisterTestServiceServer(srv, &testservice.Service{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cfg := filepath.Join(t.TempDir(), "svc.yaml")
	_ = os.WriteFile(cfg, []byte("name: test.example.com\napis: [{name: grpc.testing.TestService}]\nusage:\n  rules: [{selector: \"*\", allow_unregistered_calls: true}]\n"), 0o644)
	front, roots := testcert.Dir(t)
	for _, tc := range []struct {
		ca   string
		code codes.Code
	}{{filepath.Join(dir, "server.crt"), codes.OK}, {"", codes.Unavailable}} {
		g, err := New(Options{ServiceConfig: cfg, Backend: "grpcs://" + ln.Addr().String(), BackendCA: tc.ca,
			SSLAddr: "127.0.0.1:0", CertDir: front, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = g.Run(ctx); close(done) }()
		conn, _ := grpc.NewClient(g.Addr("ssl"), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = testpb.NewTestServiceClient(conn).UnaryCall(cctx, &testpb.SimpleRequest{})
		ccancel()
		conn.Close()
		cancel()
		<-done
		if status.Code(err) != tc.code {
			t.Fatalf("backend CA %q: %v, want %s (an unverifiable backend is refused, not trusted)", tc.ca, err, tc.code)
		}
	}
}
