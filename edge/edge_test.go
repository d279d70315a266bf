package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"github.com/meridian-gw/meridian/internal/testcert"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// gateway is a real TLS HTTP/2 server standing in for a cluster's gateway:
// it answers gRPC and REST with its region's name, health over HTTPS and
// gRPC, and can be killed and restarted on the same port.
type gateway struct {
	t       *testing.T
	region  string
	addr    string
	cert    tls.Certificate
	serving atomic.Bool
	calls   atomic.Int64
	nb      notebookSide // what it serves under /notebooks/
	mu      sync.Mutex
	ln      net.Listener
	mux     *h2mux.Server
	health  *health.Server
}

func newGateway(t *testing.T, ca *testcert.CA, region string) *gateway {
	cert := ca.Leaf(t).TLS
	g := &gateway{t: t, region: region, cert: cert}
	g.serving.Store(true)
	g.start("127.0.0.1:0")
	t.Cleanup(g.kill)
	return g
}

func (g *gateway) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		g.t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	srv := grpc.NewServer(grpc.UnknownServiceHandler(g.handle), grpc.ForceServerCodecV2(rawgrpc.Codec{}))
	g.health = health.NewServer()
	if !g.serving.Load() {
		g.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/health", func(w http.ResponseWriter, _ *http.Request) {
		if !g.serving.Load() {
			http.Error(w, `{"status":"NOT_SERVING"}`, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `{"status":"SERVING"}`)
	})
	mux.HandleFunc("/v1/region", func(w http.ResponseWriter, r *http.Request) {
		g.calls.Add(1)
		_, _ = io.WriteString(w, g.region)
	})
	mux.HandleFunc("/notebooks/", g.notebook)
	mux.HandleFunc("/v1/headers", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(r.Header)
	})
	mux.HandleFunc("/test.Echo/GetRegion", func(w http.ResponseWriter, r *http.Request) { // gRPC-Web
		w.Header().Set("Content-Type", "application/grpc-web+proto")
		body := []byte(g.region)
		_, _ = w.Write(append([]byte{0, 0, 0, 0, byte(len(body))}, body...))
		tr := "grpc-status: 0\r\n"
		_, _ = w.Write(append([]byte{0x80, 0, 0, 0, byte(len(tr))}, tr...))
	})
	m := &h2mux.Server{GRPC: srv, HTTP: &http.Server{Handler: g.hostForm(mux)}, TLS: &tls.Config{Certificates: []tls.Certificate{g.cert}, NextProtos: []string{"h2", "http/1.1"}}}
	g.mu.Lock()
	g.ln, g.mux = ln, m
	g.mu.Unlock()
	go m.ServeTLS(context.Background(), ln)
}

func (g *gateway) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	if method == "/grpc.health.v1.Health/Check" {
		st := healthpb.HealthCheckResponse_SERVING
		if !g.serving.Load() {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		b := []byte{0x08, byte(st)}
		if err := ss.RecvMsg(&rawgrpc.Frame{}); err != nil {
			return err
		}
		return ss.SendMsg(rawgrpc.FrameOf(b))
	}
	g.calls.Add(1)
	in := &rawgrpc.Frame{}
	if err := ss.RecvMsg(in); err != nil {
		return err
	}
	if strings.HasSuffix(method, "/Echo") {
		return ss.SendMsg(in)
	}
	if strings.HasSuffix(method, "/Deadline") { // answers the deadline it saw, in ms
		ms := "none"
		if dl, ok := ss.Context().Deadline(); ok {
			ms = fmt.Sprint(time.Until(dl).Milliseconds())
		}
		return ss.SendMsg(rawgrpc.FrameOf([]byte(ms)))
	}
	if strings.HasSuffix(method, "/Metadata") { // answers what it saw of the forwarding headers
		md, _ := metadata.FromIncomingContext(ss.Context())
		var seen []string
		for _, k := range []string{"authorization", "x-forwarded-for", "x-forwarded-proto", "x-custom"} {
			seen = append(seen, k+"="+strings.Join(md.Get(k), ","))
		}
		return ss.SendMsg(rawgrpc.FrameOf([]byte(strings.Join(seen, ";"))))
	}
	if strings.HasSuffix(method, "/Unavailable") {
		return status.Error(codes.Unavailable, "backend down in "+g.region)
	}
	return ss.SendMsg(rawgrpc.FrameOf([]byte(g.region)))
}

// kill drops the listener and every connection at once, as SIGKILL would.
func (g *gateway) kill() {
	g.mu.Lock()
	ln, m := g.ln, g.mux
	g.ln = nil
	g.mu.Unlock()
	if ln == nil {
		return
	}
	ln.Close()
	m.GRPC.Stop()
	_ = m.HTTP.Close()
	m.Shutdown(0)
}

func (g *gateway) restart() { g.start(g.addr) }

// rig is an edge in us-central1 over three regions' gateways.
type rig struct {
	ca    *testcert.CA
	ed    *Edge
	gws   map[string]*gateway
	conn  *grpc.ClientConn
	https *http.Client
	url   string
}

func newRig(t *testing.T, checkType string, opts ...func(*Options)) *rig {
	return newRigCA(t, testcert.NewCA(t), checkType, opts...)
}

// newRigCA is newRig with ca signing every certificate.
func newRigCA(t *testing.T, ca *testcert.CA, checkType string, opts ...func(*Options)) *rig {
	dir := t.TempDir()
	gws := map[string]*gateway{}
	var clusters strings.Builder
	for _, r := range []string{"us-central1", "europe-west1", "asia-east1"} {
		g := newGateway(t, ca, r)
		gws[r] = g
		fmt.Fprintf(&clusters, "---\nkind: Cluster\nmetadata: {name: %s-1}\nspec:\n  region: %s\n  endpoints: [{address: %q}]\n", r, r, g.addr)
	}
	seed, _ := os.ReadFile("testdata/seed.yaml")
	y := strings.Replace(string(seed), "type: HTTPS", "type: "+checkType, 1)
	// Loopback RTTs are all alike: fix the order so the test is deterministic.
	y = strings.Replace(y, "networking.gke.io/static-ip: GLOBAL_IP_ADDRESS",
		"networking.gke.io/static-ip: GLOBAL_IP_ADDRESS\n    meridian.dev/failover-order: us-central1,europe-west1,asia-east1", 1)
	_ = os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(y+clusters.String()), 0o644)
	leaf := ca.Leaf(t)
	certPEM, keyPEM := leaf.CertPEM, leaf.KeyPEM
	_ = os.MkdirAll(filepath.Join(dir, "session-scheduler-tls"), 0o700)
	_ = os.WriteFile(filepath.Join(dir, "session-scheduler-tls", "tls.crt"), certPEM, 0o600)
	_ = os.WriteFile(filepath.Join(dir, "session-scheduler-tls", "tls.key"), keyPEM, 0o600)
	o := Options{Config: dir, Region: "us-central1", Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		UpstreamCA: ca.File(t), ReloadInterval: 100 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	ed, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr, _ := ed.Addr()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(hc.CloseIdleConnections)
	r := &rig{ca: ca, ed: ed, gws: gws, conn: conn, https: hc, url: "https://" + addr}
	r.waitChecked(t)
	return r
}

// waitChecked waits until every endpoint has been checked once.
func (r *rig) waitChecked(t *testing.T) {
	waitUntil(t, 5*time.Second, "first health checks", func() bool {
		for _, p := range r.ed.Status().Pools {
			for _, rs := range p.Routing {
				for _, e := range rs.Endpoints {
					if e.CheckedAt == "" {
						return false
					}
				}
			}
		}
		return true
	})
}

func (r *rig) call(method string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := &rawgrpc.Frame{}
	err := r.conn.Invoke(ctx, method, rawgrpc.FrameOf([]byte("x")), out, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if err != nil {
		return "", err
	}
	return string(out.Data.Materialize()), nil
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func TestFailoverLosesNothingAndTrafficReturns(t *testing.T) {
	for _, check := range []string{"HTTPS", "GRPC"} {
		t.Run(check, func(t *testing.T) {
			r := newRig(t, check)
			for range 20 {
				if got, err := r.call("/test.Echo/GetRegion"); err != nil || got != "us-central1" {
					t.Fatalf("healthy: %q, %v; want the local region", got, err)
				}
			}
			r.gws["us-central1"].kill()
			var wg sync.WaitGroup
			var failed, toEU atomic.Int64
			for range 60 {
				wg.Go(func() {
					got, err := r.call("/test.Echo/GetRegion")
					if err != nil {
						failed.Add(1)
						t.Logf("failed: %v", err)
					}
					if got == "europe-west1" {
						toEU.Add(1)
					}
				})
			}
			wg.Wait()
			if failed.Load() != 0 || toEU.Load() != 60 {
				t.Fatalf("after killing us-central1: %d failed, %d served by europe-west1 (want 0 and 60: the next region in the failover order)", failed.Load(), toEU.Load())
			}
			// A call that reached a backend and is not safe to repeat is not retried.
			if _, err := r.call("/test.Echo/Unavailable"); status.Code(err) != codes.Unavailable {
				t.Fatalf("non-idempotent UNAVAILABLE: %v", err)
			}
			r.gws["us-central1"].restart()
			back := waitUntil(t, 5*time.Second, "traffic back in us-central1", func() bool {
				got, err := r.call("/test.Echo/GetRegion")
				return err == nil && got == "us-central1"
			})
			if back > 2500*time.Millisecond {
				t.Fatalf("traffic returned after %s; want within two check intervals (2s)", back)
			}
			t.Logf("%s checks: traffic back in us-central1 %s after it restarted", check, back)
		})
	}
}

func TestNotServingDrainsAndRESTFailsOver(t *testing.T) {
	r := newRig(t, "HTTPS")
	get := func() string {
		resp, err := r.https.Get(r.url + "/v1/region")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("REST via the edge: %d %s", resp.StatusCode, b)
		}
		return string(b)
	}
	if got := get(); got != "us-central1" {
		t.Fatalf("REST: %q", got)
	}
	us := r.gws["us-central1"]
	us.serving.Store(false)
	waitUntil(t, 3*time.Second, "us-central1 draining", func() bool { return get() == "europe-west1" })
	before := us.calls.Load()
	for range 20 {
		if got := get(); got != "europe-west1" {
			t.Fatalf("draining region got traffic: %q", got)
		}
	}
	if us.calls.Load() != before {
		t.Fatal("a draining endpoint received new requests")
	}
	// Kill it outright: REST GETs are retried elsewhere, never failed.
	us.serving.Store(true)
	waitUntil(t, 3*time.Second, "us-central1 serving again", func() bool { return get() == "us-central1" })
	us.kill()
	for range 20 {
		if got := get(); got == "us-central1" {
			t.Fatal("dead region answered")
		}
	}
	var st Status
	resp, err := http.Get("http://" + func() string { _, a := r.ed.Addr(); return a }() + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.MCI != "session-scheduler-mci" || len(st.Pools) != 1 || len(st.Pools[0].Routing) != 3 {
		t.Fatalf("/api/status: %+v", st)
	}
	evs := r.ed.events.list()
	kinds := map[string]bool{}
	for _, e := range evs {
		kinds[e.Kind] = true
	}
	if !kinds["draining"] || !kinds["ejected"] {
		t.Fatalf("timeline lacks draining/ejection: %v", kinds)
	}
}

// caForTest returns a CA whose leaves the edge trusts: the rig's gateways'
// certificates are all from one CA, so a new gateway reuses it.
func (r *rig) caForTest(t *testing.T) *testcert.CA { return r.ca }

func newReq(url, cookie string) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err == nil {
		req.Header.Set("Cookie", cookie)
	}
	return req, err
}

// Regression: each outage doubled the ejection backoff, so after a few
// kills a recovered region waited up to 30 s to get traffic back although
// its health checks passed.
func TestRepeatedOutagesDoNotDelayRecovery(t *testing.T) {
	r := newRig(t, "HTTPS")
	us := r.gws["us-central1"]
	for i := range 4 {
		us.kill()
		for range 5 { // traffic during the outage ejects it
			if got, err := r.call("/test.Echo/GetRegion"); err != nil || got == "us-central1" {
				t.Fatalf("outage %d: %q, %v", i, got, err)
			}
		}
		waitUntil(t, 5*time.Second, "health checks to see the outage", func() bool {
			return !r.ed.Status().Pools[0].Routing[0].Endpoints[0].Healthy
		})
		us.restart()
		back := waitUntil(t, 10*time.Second, "traffic back", func() bool {
			got, err := r.call("/test.Echo/GetRegion")
			return err == nil && got == "us-central1"
		})
		if back > 2500*time.Millisecond {
			t.Fatalf("outage %d: traffic back after %s; want within two check intervals", i+1, back)
		}
	}
}
