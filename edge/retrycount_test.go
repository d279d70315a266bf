package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"github.com/meridian-gw/meridian/internal/testcert"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func TestRetryCountedWhenNoEndpointLeft(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	g := newGateway(t, ca, "us-central1")
	clusters := fmt.Sprintf("---\nkind: Cluster\nmetadata: {name: us-1}\nspec:\n  region: us-central1\n  endpoints: [{address: %q}]\n", g.addr)
	seed, _ := os.ReadFile("testdata/seed.yaml")
	_ = os.WriteFile(filepath.Join(dir, "edge.yaml"), append(seed, clusters...), 0o644)
	leaf := ca.Leaf(t)
	certPEM, keyPEM := leaf.CertPEM, leaf.KeyPEM
	_ = os.MkdirAll(filepath.Join(dir, "session-scheduler-tls"), 0o700)
	_ = os.WriteFile(filepath.Join(dir, "session-scheduler-tls", "tls.crt"), certPEM, 0o600)
	_ = os.WriteFile(filepath.Join(dir, "session-scheduler-tls", "tls.key"), keyPEM, 0o600)
	ed, err := New(Options{Config: dir, Region: "us-central1", Listen: "127.0.0.1:0", UpstreamCA: ca.File(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	addr, _ := ed.Addr()
	conn, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: ca.Pool})))
	defer conn.Close()
	g.kill()
	err = conn.Invoke(context.Background(), "/test.Echo/GetRegion", rawgrpc.FrameOf([]byte("x")), &rawgrpc.Frame{}, grpc.ForceCodecV2(rawgrpc.Codec{}))
	t.Logf("call: %v", err)
	mfs, _ := ed.opts.Registry.Gather()
	n := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "meridian_edge_retries_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	if n != 0 {
		t.Errorf("meridian_edge_retries_total = %v for a call sent once (no other endpoint)", n)
	}
	_ = strings.TrimSpace
}
