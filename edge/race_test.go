package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"github.com/meridian-gw/meridian/internal/testcert"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// widen makes the relay's own interleaving deterministic: AttemptFailed
// (on an upstream connection's goroutine) is delayed until CallDone (on
// the client connection's goroutine, after the client reset) has run.
type widen struct {
	h                h2relay.Handler
	inAF, done       chan struct{}
	onceAF, onceDone sync.Once
}

func (w *widen) ServeCall(c *h2relay.Call) { w.h.ServeCall(c) }
func (w *widen) AttemptFailed(c *h2relay.Call, f h2relay.Failure) {
	w.onceAF.Do(func() { close(w.inAF) })
	select {
	case <-w.done:
	case <-time.After(3 * time.Second):
	}
	w.h.AttemptFailed(c, f)
}
func (w *widen) CallDone(c *h2relay.Call) {
	w.h.CallDone(c)
	w.onceDone.Do(func() { close(w.done) })
}

func TestAttemptFailedConcurrentWithCallDoneLeaksInflight(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	var clusters strings.Builder
	for _, r := range []string{"us-central1", "europe-west1"} {
		g := newGateway(t, ca, r)
		fmt.Fprintf(&clusters, "---\nkind: Cluster\nmetadata: {name: %s-1}\nspec:\n  region: %s\n  endpoints: [{address: %q}]\n", r, r, g.addr)
	}
	seed, _ := os.ReadFile("testdata/seed.yaml")
	y := strings.Replace(string(seed), "networking.gke.io/static-ip: GLOBAL_IP_ADDRESS",
		"networking.gke.io/static-ip: GLOBAL_IP_ADDRESS\n    meridian.dev/failover-order: us-central1,europe-west1", 1)
	_ = os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(y+clusters.String()), 0o644)
	leaf := ca.Leaf(t)
	certPEM, keyPEM := leaf.CertPEM, leaf.KeyPEM
	_ = os.MkdirAll(filepath.Join(dir, "session-scheduler-tls"), 0o700)
	_ = os.WriteFile(filepath.Join(dir, "session-scheduler-tls", "tls.crt"), certPEM, 0o600)
	_ = os.WriteFile(filepath.Join(dir, "session-scheduler-tls", "tls.key"), keyPEM, 0o600)
	ed, err := New(Options{Config: dir, Region: "us-central1", Listen: "127.0.0.1:0", UpstreamCA: ca.File(t),
		Idempotent: []string{"/test.Echo/Unavailable"}})
	if err != nil {
		t.Fatal(err)
	}
	w := &widen{h: relayHandler{ed}, inAF: make(chan struct{}), done: make(chan struct{})}
	ed.grpcRelay.Handler = w
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	addr, _ := ed.Addr()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { <-w.inAF; ccancel() }() // the client gives up while the attempt fails
	err = conn.Invoke(cctx, "/test.Echo/Unavailable", rawgrpc.FrameOf([]byte("x")), &rawgrpc.Frame{}, grpc.ForceCodecV2(rawgrpc.Codec{}))
	t.Logf("client: %v", err)
	<-w.done
	leaked := func() (ids []string) {
		for _, p := range ed.gen.Load().pools {
			for _, e := range p.all {
				if n := e.inflight.Load(); n != 0 {
					ids = append(ids, fmt.Sprintf("%s: inflight = %d", e.id, n))
				}
			}
		}
		return ids
	}
	// The relay finishes the call on its own goroutines: wait for them,
	// then every count must be back at zero.
	deadline := time.Now().Add(5 * time.Second)
	for len(leaked()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
	}
	if l := leaked(); len(l) > 0 {
		t.Errorf("in-flight counts leaked after the only call ended: %v", l)
	}
}
