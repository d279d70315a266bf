package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"github.com/meridian-gw/meridian/internal/testcert"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 limits reach the edge's native gRPC front from Options.H2
// (the --h2_* flags), and a connection cut off for a flood is counted in
// meridian_edge_h2_floods_total by kind: here a ping flood with a limit
// of 5 a second.
func TestH2LimitsReachTheRelayAndFloodsAreMetrics(t *testing.T) {
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
	ed, err := New(Options{Config: dir, Region: "us-central1", Listen: "127.0.0.1:0", UpstreamCA: ca.File(t),
		H2: h2relay.Limits{MaxPingsPerSecond: 5}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	addr, _ := ed.Addr()

	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(nc, nc)
	_, _ = nc.Write([]byte(http2.ClientPreface))
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", "/test.Echo/GetRegion"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	_ = fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
	for range 20 {
		if fr.WritePing(false, [8]byte{}) != nil {
			break
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY after 20 pings with --h2_max_pings_per_second=5: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			break
		}
	}
	waitUntil(t, 5*time.Second, "the flood in meridian_edge_h2_floods_total", func() bool {
		mfs, _ := ed.opts.Registry.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "meridian_edge_h2_floods_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "ping" && m.GetCounter().GetValue() == 1 {
					return true
				}
			}
		}
		return false
	})
}

func TestH2LimitsAreValidated(t *testing.T) {
	_, err := New(Options{Config: "unused", Region: "us-central1", H2: h2relay.Limits{MaxResetsPerSecond: -1}})
	if err == nil || !strings.Contains(err.Error(), "--h2_max_resets_per_second") {
		t.Fatalf("MaxResetsPerSecond -1: %v, want an error naming --h2_max_resets_per_second", err)
	}
}
