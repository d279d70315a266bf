package gateway

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// TestUnixSocketBackend: --backend unix:///PATH carries both the native
// gRPC path (the frame relay) and REST transcoding (grpc-go) over the
// socket, with the caller's identity forwarded — the hop `meridian dev`
// uses so that no process on loopback can pose as the gateway.
func TestUnixSocketBackend(t *testing.T) {
	is := newIssuer(t)
	sock := filepath.Join(t.TempDir(), "backend.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, &testservice.Service{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cfg := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(cfg, []byte(`type: google.api.Service
name: test.example.com
apis: [{name: grpc.testing.TestService}]
authentication:
  providers: [{id: p, issuer: "`+is.url()+`", jwks_uri: "`+is.url()+`/jwks"}]
  rules: [{selector: "*", requirements: [{provider_id: p}]}]
http:
  rules:
  - {selector: grpc.testing.TestService.UnaryCall, post: /v1/unary, body: "*"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, roots := testcert.Dir(t)
	g, err := New(Options{ServiceConfig: cfg, Backend: "unix://" + sock, Descriptor: descriptorSet(t),
		SSLAddr: "127.0.0.1:0", CertDir: dir, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tok := is.token(t, "alice", withAud("https://test.example.com"))

	conn, err := grpc.NewClient(g.Addr("ssl"), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok), 10*time.Second)
	defer ccancel()
	var hdr metadata.MD
	out, err := testpb.NewTestServiceClient(conn).UnaryCall(cctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hi")}}, grpc.Header(&hdr))
	if err != nil || string(out.GetPayload().GetBody()) != "hi" {
		t.Fatalf("native gRPC through the gateway to a unix socket backend: %v", err)
	}
	if hdr.Get("seen-userinfo")[0] == "" {
		t.Errorf("the backend saw no X-Endpoint-API-UserInfo over the unix socket")
	}

	r := doReq(t, newGWClient(roots), "POST", "https://"+g.Addr("ssl")+"/v1/unary", tok, `{"payload":{"body":"aGk="}}`)
	if r.code != 200 || !strings.Contains(r.body, "aGk=") {
		t.Fatalf("REST through the gateway to a unix socket backend: HTTP %d %s", r.code, r.body)
	}
}

func TestUnixBackendURLMustBeAbsolute(t *testing.T) {
	for _, raw := range []string{"unix://relative/path.sock", "unix:rel.sock"} {
		if _, _, err := backendTarget(raw, ""); err == nil || !strings.Contains(err.Error(), "unix:///ABSOLUTE/PATH") {
			t.Errorf("backendTarget(%q): %v; want an error showing unix:///ABSOLUTE/PATH", raw, err)
		}
	}
	if host, tlsCfg, err := backendTarget("unix:///run/m/s.sock", ""); err != nil || host != "unix:///run/m/s.sock" || tlsCfg != nil {
		t.Errorf("backendTarget(unix:///run/m/s.sock) = %q, %v, %v", host, tlsCfg, err)
	}
}
