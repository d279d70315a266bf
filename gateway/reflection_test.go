//lint:file-ignore SA1019 v1alpha is deprecated, and still what older grpcurl and Postman ask.

package gateway

import (
	"context"
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	rv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

func withReflection(mode string) gwOpt { return func(o *Options) { o.Reflection = mode } }

// reflect asks the gateway's server reflection (v1) over conn, as grpcurl
// does: one stream, one request after another.
func reflect(t *testing.T, conn *grpc.ClientConn, tok string, reqs ...*rv1.ServerReflectionRequest) ([]*rv1.ServerReflectionResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bearer(tok), 10*time.Second)
	defer cancel()
	st, err := rv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	var out []*rv1.ServerReflectionResponse
	for _, r := range reqs {
		if err := st.Send(r); err != nil {
			_, err = st.Recv() // the status
			return nil, err
		}
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		out = append(out, resp)
	}
	return out, st.CloseSend()
}

func listServices() *rv1.ServerReflectionRequest {
	return &rv1.ServerReflectionRequest{MessageRequest: &rv1.ServerReflectionRequest_ListServices{ListServices: "*"}}
}

func fileContaining(sym string) *rv1.ServerReflectionRequest {
	return &rv1.ServerReflectionRequest{MessageRequest: &rv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: sym}}
}

func fileNames(t *testing.T, r *rv1.ServerReflectionResponse) []string {
	t.Helper()
	var names []string
	for _, b := range r.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(b, &fd); err != nil {
			t.Fatal(err)
		}
		names = append(names, fd.GetName())
	}
	return names
}

func (e *epGateway) conn() *grpc.ClientConn {
	conn, err := grpc.NewClient(e.ssl, grpc.WithTransportCredentials(credentials.NewTLS(e.roots)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	return conn
}

// The gateway serves reflection itself, from its descriptors, showing the
// config's apis and the files they import, nothing else; under the
// config's rules, like any method.
func TestReflectionShowsTheConfiguredAPIs(t *testing.T) {
	e := newEPGateway(t, "", withReflection(ReflectionAuthenticated))
	conn := e.conn()
	tok := e.a.token(t, "alice")
	if _, err := reflect(t, conn, "", listServices()); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("reflection without a token under --reflection=authenticated: %v; want UNAUTHENTICATED", err)
	}
	rs, err := reflect(t, conn, tok, listServices(), fileContaining("grpc.testing.TestService"), fileContaining("grpc.testing.SimpleRequest"),
		fileContaining("google.protobuf.Duration"), fileContaining("grpc.health.v1.Health"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, s := range rs[0].GetListServicesResponse().GetService() {
		listed = append(listed, s.GetName())
	}
	slices.Sort(listed)
	want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection", "grpc.testing.TestService"}
	if !slices.Equal(listed, want) {
		t.Fatalf("listed %v; want %v", listed, want)
	}
	if files := fileNames(t, rs[1]); !slices.Contains(files, "grpc/testing/test.proto") || !slices.Contains(files, "grpc/testing/messages.proto") {
		t.Fatalf("the file of grpc.testing.TestService and its imports: %v", files)
	}
	if files := fileNames(t, rs[2]); !slices.Contains(files, "grpc/testing/messages.proto") {
		t.Fatalf("the file of a message the API uses: %v", files)
	}
	// A file the apis do not import is not shown, although the binary has it.
	if e := rs[3].GetErrorResponse(); codes.Code(e.GetErrorCode()) != codes.NotFound {
		t.Fatalf("google.protobuf.Duration (not imported by the apis): %v; want NOT_FOUND", rs[3])
	}
	if files := fileNames(t, rs[4]); !slices.Equal(files, []string{"grpc/health/v1/health.proto"}) {
		t.Fatalf("the health service's file: %v", files)
	}
	// v1alpha, as older grpcurl and Postman ask.
	ctx, cancel := context.WithTimeout(bearer(tok), 10*time.Second)
	defer cancel()
	st, err := rv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err == nil {
		err = st.Send(&rv1alpha.ServerReflectionRequest{MessageRequest: &rv1alpha.ServerReflectionRequest_ListServices{}})
	}
	var resp *rv1alpha.ServerReflectionResponse
	if err == nil {
		resp, err = st.Recv()
	}
	if err != nil || len(resp.GetListServicesResponse().GetService()) != len(want) {
		t.Fatalf("v1alpha list: %v %v", resp, err)
	}
}

// Every gRPC entry point serves it the same way, and REST does not route it.
func TestReflectionOnEveryEntryPoint(t *testing.T) {
	e := newEPGateway(t, "", withReflection(ReflectionAuthenticated))
	call := func(tok string) epCall {
		return epCall{method: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", msg: listServices(), token: tok}
	}
	for _, ep := range entryPoints {
		if r := ep.call(e, call("")); ep.name != "rest" && !r.is(ep.name, codes.Unauthenticated, 401) {
			t.Errorf("%s without a token: %v (HTTP %d) %q", ep.name, r.code, r.status, r.msg)
		}
		r := ep.call(e, call(e.b.token(t, "alice")))
		if ep.name == "rest" {
			if !r.is(ep.name, codes.NotFound, 404) {
				t.Errorf("REST: %v (HTTP %d); want no route", r.code, r.status)
			}
			continue
		}
		var resp rv1.ServerReflectionResponse
		if r.code != codes.OK || proto.Unmarshal(r.reply, &resp) != nil || len(resp.GetListServicesResponse().GetService()) != 4 {
			t.Errorf("%s: %v %q, %v", ep.name, r.code, r.msg, &resp)
		}
	}
}

func TestReflectionModes(t *testing.T) {
	off := newEPGateway(t, "")
	if _, err := reflect(t, off.conn(), off.a.token(t, "alice"), listServices()); status.Code(err) != codes.Unimplemented ||
		!strings.Contains(err.Error(), msgNotDefined) {
		t.Fatalf("reflection by default (off): %v; want UNIMPLEMENTED, as ESP", err)
	}
	open := newEPGateway(t, "", withReflection(ReflectionOpen))
	if rs, err := reflect(t, open.conn(), "", listServices()); err != nil || len(rs[0].GetListServicesResponse().GetService()) != 4 {
		t.Fatalf("--reflection=open without a token: %v %v", rs, err)
	}
	// Open lets calls without credentials through, not the other methods.
	if r := open.viaRelay(unary("")); r.code != codes.Unauthenticated {
		t.Fatalf("--reflection=open opened another method: %v", r.code)
	}
	o := Options{ServiceConfig: "x", SSLAddr: ":0", Reflection: "on"}
	if err := o.defaults(); err == nil || !strings.Contains(err.Error(), "--reflection") {
		t.Fatalf("--reflection=on: %v", err)
	}
}

// The local server that answers reflection serves only what the gateway
// forwards: a process on the host calling it directly is refused, and a
// client cannot send the key header through the gateway.
func TestReflectionLocalServerNeedsTheGatewaysKey(t *testing.T) {
	e := newEPGateway(t, "", withReflection(ReflectionOpen))
	direct, err := grpc.NewClient(e.g.local.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := reflect(t, direct, "", listServices()); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("calling the local server directly: %v; want PERMISSION_DENIED", err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), localKeyHeader, "guess")
	st, err := rv1.NewServerReflectionClient(direct).ServerReflectionInfo(ctx)
	if err == nil {
		_ = st.Send(listServices())
		_, err = st.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a wrong key: %v", err)
	}
}

// grpcurl, as `meridian dev` prints it, through the gateway: it needs
// reflection to list services and to call a method by name.
func TestGrpcurlThroughTheGateway(t *testing.T) {
	grpcurl := grpcurlPath(t)
	h := newGW(t, withReflection(ReflectionAuthenticated))
	ca := filepath.Join(h.g.opts.CertDir, "server.crt")
	tok := h.is.token(t, "alice")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(grpcurl, append([]string{"-cacert", ca, "-max-time", "10"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("-H", "authorization: Bearer "+tok, h.ssl, "list"); !strings.Contains(out, "meridian.scheduler.v1.SessionScheduler") {
		t.Fatalf("grpcurl list: %s", out)
	}
	if out := run("-H", "authorization: Bearer "+tok, h.ssl, "describe", "meridian.scheduler.v1.SessionScheduler.GetQuota"); !strings.Contains(out, "rpc GetQuota") {
		t.Fatalf("grpcurl describe: %s", out)
	}
	if out := run("-H", "authorization: Bearer "+tok, h.ssl, "meridian.scheduler.v1.SessionScheduler/GetQuota"); !strings.Contains(out, `"owner": "alice"`) {
		t.Fatalf("grpcurl GetQuota: %s", out)
	}
	out, err := exec.Command(grpcurl, "-cacert", ca, "-max-time", "10", h.ssl, "list").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Unauthenticated") {
		t.Fatalf("grpcurl list without a token: %v\n%s", err, out)
	}
}

// grpcurlPath finds grpcurl (scripts/ensure-tools.sh installs it).
func grpcurlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	p := filepath.Join(build.Default.GOPATH, "bin", "grpcurl")
	if _, err := os.Stat(p); err != nil {
		t.Fatal("grpcurl is needed: scripts/ensure-tools.sh installs it (go install github.com/fullstorydev/grpcurl/cmd/grpcurl)")
	}
	return p
}
