package h2spec

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/gateway"
	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startBaseline starts Go's own net/http server over TLS with HTTP/2.
func startBaseline(t *testing.T, ca *testcert.CA) string {
	t.Helper()
	cert := ca.Leaf(t).TLS
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok\n")
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // h2spec's errors are expected
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// startScheduler starts a real Session Scheduler (SQLite store) with
// health, on loopback, and returns its address.
func startScheduler(t *testing.T) string {
	t.Helper()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, err := scheduler.ParseConfig([]byte(`pools: [{name: cpu, capacity: 10, maxPerUser: 10}]`))
	if err != nil {
		t.Fatal(err)
	}
	sched, err := scheduler.New(scheduler.Options{Region: "us-central1", Config: cfg, Store: st,
		Runtime: &runtime.Local{Command: []string{"true"}}})
	if err != nil {
		t.Fatal(err)
	}
	peers, err := scheduler.ParseTrustedPeers(scheduler.DefaultTrustedPeers)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	scheduler.NewServer(sched, peers).Register(g)
	healthpb.RegisterHealthServer(g, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// startGateway starts a real gateway with deploy/service.yaml in front of
// a real scheduler and returns its TLS address. Tokens are never sent, so
// its issuer serves an empty key set.
func startGateway(t *testing.T, ca *testcert.CA) string {
	t.Helper()
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `{"keys":[]}`)
	}))
	t.Cleanup(jwks.Close)
	seed, err := os.ReadFile("../../deploy/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("name: SERVICE_NAME", "name: h2spec.example.com",
		"issuer: SERVICE_ACCOUNT", "issuer: "+jwks.URL,
		"jwks_uri: https://www.googleapis.com/robot/v1/metadata/x509/SERVICE_ACCOUNT", "jwks_uri: "+jwks.URL).Replace(string(seed))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "service.yaml"), []byte(cfg))
	ca.Leaf(t).Write(t, dir, "server.crt", "server.key")
	g, err := gateway.New(gateway.Options{ServiceConfig: filepath.Join(dir, "service.yaml"), Backend: "grpc://" + startScheduler(t),
		SSLAddr: "127.0.0.1:0", CertDir: dir, Drain: 0, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Run: %v", err)
		}
	})
	return g.Addr("ssl")
}

// startEdge starts a real edge (edge/testdata/seed.yaml) whose one
// cluster is the gateway at gwAddr, and returns its listener's address
// once the gateway has been health-checked.
func startEdge(t *testing.T, ca *testcert.CA, gwAddr string) string {
	t.Helper()
	dir := t.TempDir()
	seed, err := os.ReadFile("../../edge/testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cluster := fmt.Sprintf("---\nkind: Cluster\nmetadata: {name: us-central1-1}\nspec:\n  region: us-central1\n  endpoints: [{address: %q}]\n", gwAddr)
	writeFile(t, filepath.Join(dir, "edge.yaml"), append(seed, cluster...))
	ca.Leaf(t).Write(t, filepath.Join(dir, "session-scheduler-tls"), "tls.crt", "tls.key")
	ed, err := edge.New(edge.Options{Config: dir, Region: "us-central1", Listen: "127.0.0.1:0", UpstreamCA: ca.File(t),
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr, _ := ed.Addr()
	deadline := time.Now().Add(10 * time.Second)
	for !healthChecked(ed) {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not health-check the gateway within 10s")
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
	return addr
}

func healthChecked(ed *edge.Edge) bool {
	for _, p := range ed.Status().Pools {
		for _, rs := range p.Routing {
			for _, e := range rs.Endpoints {
				if e.CheckedAt == "" {
					return false
				}
			}
		}
	}
	return true
}

// startRelay starts a bare frame relay on h2c, without the demultiplexer:
// every call is answered UNIMPLEMENTED by the relay itself.
func startRelay(t *testing.T) string {
	t.Helper()
	srv := &h2relay.Server{Handler: rejectAll{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { ln.Close(); srv.Stop() })
	return ln.Addr().String()
}

type rejectAll struct{}

func (rejectAll) ServeCall(c *h2relay.Call)                    { c.Reject(codes.Unimplemented, "h2spec target") }
func (rejectAll) AttemptFailed(*h2relay.Call, h2relay.Failure) {}
func (rejectAll) CallDone(*h2relay.Call)                       {}
