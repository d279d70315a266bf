package source_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/internal/h2mux"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testservice"
	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	"github.com/meridian-gw/meridian/kube/source"
	"github.com/meridian-gw/meridian/test/kubetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

var debounce = flag.Duration("debounce", 50*time.Millisecond, "the source's debounce in these tests (TestPropagation measures with it)")

const (
	ns  = "default"
	mcs = "session-scheduler-svc" // the seed's
)

// backend is a pod: a real TLS server on a pod IP that answers the
// interop TestService (gRPC) and /v1/whoami (REST) with its address, and
// the seed BackendConfig's HTTPS health check on /v1/health.
type backend struct {
	addr  string
	calls atomic.Int64
}

func startBackend(t *testing.T, ca *testcert.CA, ip string) *backend {
	t.Helper()
	b := &backend{addr: net.JoinHostPort(ip, "443")}
	ln, err := net.Listen("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		b.calls.Add(1)
		_ = grpc.SetHeader(ctx, metadata.Pairs("served-by", b.addr))
		return h(ctx, req)
	}))
	testpb.RegisterTestServiceServer(gs, &testservice.Service{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"status":"SERVING"}`) })
	mux.HandleFunc("GET /v1/whoami", func(w http.ResponseWriter, _ *http.Request) {
		b.calls.Add(1)
		_, _ = io.WriteString(w, b.addr)
	})
	m := &h2mux.Server{GRPC: gs, HTTP: &http.Server{Handler: mux},
		TLS: &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, ip).TLS}, NextProtos: []string{"h2", "http/1.1"}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { m.ServeTLS(ctx, ln); close(done) }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		gs.Stop()
		m.Shutdown(0)
		<-done
	})
	return b
}

// rig is a config cluster with the CRDs and the seed's resources, and an
// edge in us-central1 watching it.
type rig struct {
	c     *kubetest.Cluster
	ed    *edge.Edge
	conn  *grpc.ClientConn
	https *http.Client
	url   string
}

// configCluster starts a config cluster with the CRDs, the seed's MCI,
// MCS and BackendConfig in namespace default, and two live Clusters.
func configCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{Name: "config"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kubectl := func(args ...string) {
		t.Helper()
		if _, err := c.Kubectl(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	kubectl("apply", "-k", filepath.Join("..", "..", "deploy", "kubernetes", "crds"))
	kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	kubectl("apply", "-n", ns, "-f", filepath.Join("..", "..", "deploy", "edge", "session-scheduler.yaml"))
	applyYAML(t, c, clusterYAML("us-central1-a", "us-central1")+"---\n"+clusterYAML("europe-west1-b", "europe-west1"))
	return c
}

func newRig(t *testing.T, ca *testcert.CA) *rig {
	t.Helper()
	c := configCluster(t)
	certDir := t.TempDir()
	ca.Leaf(t).Write(t, certDir, "tls.crt", "tls.key")
	src, err := source.New(source.Options{Config: c.Config, Debounce: *debounce, Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ed, err := edge.New(edge.Options{Source: src, Region: "us-central1", Listen: "127.0.0.1:0", CertDir: certDir,
		UpstreamCA: ca.File(t), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ed.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("edge: %v", err)
		}
	})
	addr, _ := ed.Addr()
	r := clients(t, ca, addr)
	r.c, r.ed = c, ed
	return r
}

// clients are a gRPC and an HTTPS client of the edge at addr.
func clients(t *testing.T, ca *testcert.CA, addr string) *rig {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}}
	t.Cleanup(hc.CloseIdleConnections)
	return &rig{conn: conn, https: hc, url: "https://" + addr}
}

// testLog writes the edge's and the source's logs into the test's.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func clusterYAML(name, region string) string {
	return fmt.Sprintf("apiVersion: meridian.dev/v1alpha1\nkind: Cluster\nmetadata: {name: %s}\nspec:\n  region: %s\n  kubeconfigSecretRef: {name: %s-kubeconfig}\n", name, region, name)
}

func applyYAML(t *testing.T, c *kubetest.Cluster, y string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Kubectl(ctx, "apply", "-n", ns, "-f", f); err != nil {
		t.Fatal(err)
	}
}

// ep is one published endpoint.
type ep struct {
	b                  *backend
	notReady, draining bool
}

// publish writes the (seed MCS, cluster) EndpointSlice as `meridian
// controller` does (the meridian.dev/v1alpha1 contract) and returns when
// the apiserver has it.
func publish(t *testing.T, c *kubetest.Cluster, cluster string, eps ...ep) {
	t.Helper()
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: meridianv1alpha1.PublishedSliceName(mcs, cluster, 0), Namespace: ns, Labels: map[string]string{
			meridianv1alpha1.LabelServiceName: mcs,
			meridianv1alpha1.LabelManagedBy:   meridianv1alpha1.ManagedByController,
			meridianv1alpha1.LabelCluster:     cluster,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("ssl"), Port: new(int32(443))}},
	}
	for _, e := range eps {
		host, _, _ := net.SplitHostPort(e.b.addr)
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{
			Ready: new(!e.notReady && !e.draining), Serving: new(!e.notReady), Terminating: new(e.draining)}})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	api := c.Client.DiscoveryV1().EndpointSlices(ns)
	for {
		old, err := api.Get(ctx, sl.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(ctx, sl, metav1.CreateOptions{})
		case err == nil:
			sl.ResourceVersion = old.ResourceVersion
			_, err = api.Update(ctx, sl, metav1.UpdateOptions{})
		}
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("publishing %s: %v", sl.Name, err)
		}
	}
}

// grpcCall makes a unary call through the edge and says who served it.
func (r *rig) grpcCall(ctx context.Context) (string, error) {
	var hdr metadata.MD
	_, err := testpb.NewTestServiceClient(r.conn).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr))
	if err != nil {
		return "", err
	}
	return strings.Join(hdr.Get("served-by"), ","), nil
}

// restCall makes a REST call through the edge and says who served it.
func (r *rig) restCall(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url+"/v1/whoami", nil)
	if err != nil {
		return "", err
	}
	resp, err := r.https.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("REST: %s: %s", resp.Status, b)
	}
	return string(b), err
}

// waitServed polls until 20 calls in a row, gRPC and REST alternately,
// are served by backends of want only, and every one of them served
// some; it fails the test after a deadline.
func (r *rig) waitServed(t *testing.T, what string, want ...*backend) {
	t.Helper()
	allowed := map[string]bool{}
	for _, b := range want {
		allowed[b.addr] = true
	}
	deadline := time.Now().Add(30 * time.Second)
	var last []string
	for time.Now().Before(deadline) {
		seen, ok := map[string]bool{}, true
		last = last[:0]
		for i := range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			call := r.grpcCall
			if i%2 == 1 {
				call = r.restCall
			}
			who, err := call(ctx)
			cancel()
			if err != nil {
				who = "error: " + err.Error()
			}
			last = append(last, who)
			if !allowed[who] {
				ok = false
				break
			}
			seen[who] = true
		}
		if ok && len(seen) == len(allowed) {
			return
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	t.Fatalf("%s: calls were served by %v; want each of %v and nothing else", what, last, slices.Collect(func(yield func(string) bool) {
		for a := range allowed {
			if !yield(a) {
				return
			}
		}
	}))
}

func TestEdgeFollowsTheConfigCluster(t *testing.T) {
	ca := testcert.NewCA(t)
	a, b, c, e := startBackend(t, ca, "10.244.200.1"), startBackend(t, ca, "10.244.200.2"),
		startBackend(t, ca, "10.244.200.3"), startBackend(t, ca, "10.244.201.1")
	r := newRig(t, ca)
	publish(t, r.c, "us-central1-a", ep{b: a}, ep{b: b})
	publish(t, r.c, "europe-west1-b", ep{b: e})

	t.Run("routes gRPC and REST to the local region's published endpoints", func(t *testing.T) {
		r.waitServed(t, "us-central1's endpoints", a, b)
		st := r.ed.Status()
		if len(st.Pools) != 1 || st.MCI != "session-scheduler-mci" {
			t.Fatalf("status: %+v; want the seed's MCI with one pool", st)
		}
		regions := map[string]int{}
		for _, rs := range st.Pools[0].Routing {
			regions[rs.Region] = len(rs.Endpoints)
		}
		if regions["us-central1"] != 2 || regions["europe-west1"] != 1 {
			t.Fatalf("endpoints by region: %v; want us-central1: 2, europe-west1: 1 (regions from the Cluster resources)", regions)
		}
	})
	t.Run("not ready and terminating endpoints take no calls", func(t *testing.T) {
		publish(t, r.c, "us-central1-a", ep{b: a}, ep{b: b, notReady: true})
		r.waitServed(t, "b not ready", a)
		publish(t, r.c, "us-central1-a", ep{b: a, draining: true}, ep{b: c})
		r.waitServed(t, "a terminating, c added", c)
	})
	t.Run("a drained region fails over", func(t *testing.T) {
		publish(t, r.c, "us-central1-a")
		r.waitServed(t, "us-central1 empty", e)
		publish(t, r.c, "us-central1-a", ep{b: a})
		r.waitServed(t, "us-central1 back", a)
	})
	t.Run("a Cluster that goes takes its endpoints along", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.c.Kubectl(ctx, "delete", "clusters.meridian.dev", "us-central1-a"); err != nil {
			t.Fatal(err)
		}
		r.waitServed(t, "us-central1-a deleted", e)
		applyYAML(t, r.c, clusterYAML("us-central1-a", "us-central1"))
		r.waitServed(t, "us-central1-a back", a)
	})
	t.Run("GKE fields the edge does not act on are warnings, as in file mode", func(t *testing.T) {
		applyYAML(t, r.c, `apiVersion: cloud.google.com/v1beta1
kind: BackendConfig
metadata: {name: session-scheduler-svc-backend}
spec:
  healthCheck: {requestPath: /v1/health, type: HTTPS}
  iap: {enabled: true}
`)
		waitFor(t, "the iap warning", func() bool {
			return slices.ContainsFunc(r.ed.Status().Warnings, func(w string) bool { return strings.Contains(w, `"iap"`) })
		})
		r.waitServed(t, "routing unchanged", a)
	})
	t.Run("an invalid change keeps the last good configuration", func(t *testing.T) {
		patch := func(port string) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := r.c.Kubectl(ctx, "patch", "-n", ns, "multiclusteringress", "session-scheduler-mci", "--type=merge",
				"-p", `{"spec":{"template":{"spec":{"backend":{"servicePort":`+port+`}}}}}`); err != nil {
				t.Fatal(err)
			}
		}
		patch("8443") // the MCS has no such port
		waitFor(t, "the reload error", func() bool { return strings.Contains(r.ed.Status().LastError, "servicePort = 8443") })
		// Fail closed: while the MCI is invalid, nothing else applies either.
		publish(t, r.c, "us-central1-a", ep{b: b})
		r.waitServed(t, "the last good configuration", a)
		patch("443")
		r.waitServed(t, "recovery, with the change made meanwhile", b)
		if st := r.ed.Status(); st.LastError != "" {
			t.Fatalf("after recovery: lastReloadError = %q", st.LastError)
		}
		// A deleted MCI is a mistake to survive, not an order to stop.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := r.c.Kubectl(ctx, "delete", "-n", ns, "multiclusteringress", "session-scheduler-mci"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the reload error", func() bool { return strings.Contains(r.ed.Status().LastError, "no MultiClusterIngress") })
		r.waitServed(t, "the last good configuration, the MCI deleted", b)
		if _, err := r.c.Kubectl(ctx, "apply", "-n", ns, "-f", filepath.Join("..", "..", "deploy", "edge", "session-scheduler.yaml")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "recovery", func() bool { return r.ed.Status().LastError == "" })
	})
	t.Run("no call fails while endpoints change", func(t *testing.T) {
		var stop atomic.Bool
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		for i := range 6 {
			wg.Go(func() {
				call := r.grpcCall
				if i%3 == 2 {
					call = r.restCall
				}
				for !stop.Load() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := call(ctx)
					cancel()
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					} else {
						ok.Add(1)
					}
				}
			})
		}
		sets := [][]ep{{{b: a}}, {{b: a}, {b: b}}, {{b: b, draining: true}, {b: c}}, {{b: c}, {b: a}}, {{b: a, notReady: true}, {b: b}}, {{b: b}}}
		for i := range 24 {
			publish(t, r.c, "us-central1-a", sets[i%len(sets)]...)
			waitFor(t, "the change to apply", func() bool { return localEndpoints(r.ed) == ready(sets[i%len(sets)]) })
		}
		stop.Store(true)
		wg.Wait()
		if failed.Load() != 0 || ok.Load() < 100 {
			t.Fatalf("during 24 endpoint changes: %d calls ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
		}
		t.Logf("during 24 endpoint changes: %d calls ok, none failed", ok.Load())
	})
	t.Run("keeps serving while the apiserver is away, and reconnects", func(t *testing.T) {
		publish(t, r.c, "us-central1-a", ep{b: a})
		r.waitServed(t, "before", a)
		r.c.StopAPIServer(t)
		for range 50 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			who, err := r.grpcCall(ctx)
			cancel()
			if err != nil || who != a.addr {
				t.Fatalf("with the apiserver down: served by %q, %v; want %s", who, err, a.addr)
			}
		}
		r.c.StartAPIServer(t)
		publish(t, r.c, "us-central1-a", ep{b: c})
		r.waitServed(t, "a change after the apiserver came back", c)
	})
}

// The command, as deployed: `meridian edge --source=kubernetes
// --kubeconfig FILE` routes gRPC and REST by what the config cluster
// says, follows a change, and stops on SIGTERM.
func TestCommand(t *testing.T) {
	ca := testcert.NewCA(t)
	a, b := startBackend(t, ca, "10.244.200.1"), startBackend(t, ca, "10.244.200.2")
	c := configCluster(t)
	publish(t, c, "us-central1-a", ep{b: a})
	bin := filepath.Join(t.TempDir(), "meridian")
	build := exec.Command("go", "build", "-o", bin, "./cmd/meridian")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	certDir := t.TempDir()
	ca.Leaf(t).Write(t, certDir, "tls.crt", "tls.key")
	cmd := exec.Command(bin, "edge", "--source=kubernetes", "--kubeconfig", c.Kubeconfig, "--region", "us-central1",
		"--listen", "127.0.0.1:0", "--admin_listen", "", "--cert_dir", certDir, "--upstream_ca", ca.File(t))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	listening := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Log("meridian: " + line)
			var rec struct{ Msg, Listen string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "edge serving" {
				select {
				case listening <- rec.Listen:
				default:
				}
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-scanned }) // no t.Log after the test
	var addr string
	select {
	case addr = <-listening:
	case err := <-exited:
		t.Fatalf("meridian edge exited before serving: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("meridian edge did not serve within a minute")
	}
	r := clients(t, ca, addr)
	r.waitServed(t, "the published endpoint", a)
	publish(t, c, "us-central1-a", ep{b: b})
	r.waitServed(t, "the change", b)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("meridian edge on SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("meridian edge did not stop on SIGTERM")
	}
}

// TestPropagation measures the time from an EndpointSlice update
// accepted by the apiserver to the edge routing to the new endpoint and
// away from the old one, over 60 changes (docs/benchmarks.md). It asserts
// that every change arrives, not how fast.
func TestPropagation(t *testing.T) {
	ca := testcert.NewCA(t)
	a, b, e := startBackend(t, ca, "10.244.200.1"), startBackend(t, ca, "10.244.200.2"), startBackend(t, ca, "10.244.201.1")
	r := newRig(t, ca)
	publish(t, r.c, "europe-west1-b", ep{b: e})
	publish(t, r.c, "us-central1-a", ep{b: a})
	r.waitServed(t, "the first endpoint", a)
	const changes = 60
	var took []time.Duration
	for i := range changes {
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		publish(t, r.c, "us-central1-a", ep{b: to})
		start := time.Now()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			who, err := r.grpcCall(ctx)
			cancel()
			if err != nil {
				t.Fatalf("change %d: %v", i, err)
			}
			if who == to.addr {
				break
			}
			if who != from.addr || time.Since(start) > 30*time.Second {
				t.Fatalf("change %d: served by %s; want %s, then %s", i, who, from.addr, to.addr)
			}
		}
		took = append(took, time.Since(start))
		// Away: nothing more reaches the old endpoint.
		for range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			who, err := r.grpcCall(ctx)
			cancel()
			if err != nil || who != to.addr {
				t.Fatalf("change %d: after the first call on %s, one went to %q (%v)", i, to.addr, who, err)
			}
		}
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	t.Logf("propagation over %d EndpointSlice updates (debounce %s): p50 %s, p99 %s, max %s",
		changes, *debounce, q(0.50).Round(time.Millisecond), q(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// localEndpoints are the us-central1 endpoints the edge routes to, as
// "addr,addr" in order.
func localEndpoints(ed *edge.Edge) string {
	var out []string
	for _, p := range ed.Status().Pools {
		for _, rs := range p.Routing {
			if rs.Region == "us-central1" {
				for _, e := range rs.Endpoints {
					out = append(out, e.Address)
				}
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func ready(eps []ep) string {
	var out []string
	for _, e := range eps {
		if !e.notReady && !e.draining {
			out = append(out, e.b.addr)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
