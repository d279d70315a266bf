package main

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/test/benchkit"
)

// smokeSize stays under grpc-go's 1 KiB buffer-pooling threshold, so that
// these quick checks exercise the harness, not the edge's handling of
// pooled buffers (which `edgebench run` probes and reports).
const smokeSize = 1000

type harness struct {
	fx    *fixtures
	be    *backend
	roots *x509.CertPool
}

func newHarness(t testing.TB) *harness {
	fx, err := newFixtures(t.TempDir(), smokeSize)
	if err != nil {
		t.Fatal(err)
	}
	be, err := startBackend("127.0.0.1:0", fx.certDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(be.stop)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(fx.caPEM)
	return &harness{fx: fx, be: be, roots: roots}
}

// startEdge runs the edge in-process over the backend, as `meridian edge`
// would with the benchmark's config.
func (h *harness) startEdge(t testing.TB) string {
	dir, err := h.fx.edgeConfig("edge-config", h.be.addr())
	if err != nil {
		t.Fatal(err)
	}
	ed, err := edge.New(edge.Options{Config: dir, Region: "us-central1", Listen: "127.0.0.1:0", CertDir: h.fx.certDir,
		UpstreamCA: h.fx.caPath, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr, _ := ed.Addr()
	return addr
}

func (h *harness) client(t testing.TB, addr string) *benchkit.EchoClient {
	c, err := benchkit.NewEchoClient(addr, h.roots, "", h.fx.payload)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := benchkit.WaitReady(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestHarness checks the benchmark's pieces against the real edge (and
// HAProxy when installed): certificates, the edge config built from the
// seed, the echo backend and its health endpoint, and the load generator.
func TestHarness(t *testing.T) {
	h := newHarness(t)
	targets := map[string]string{"direct": h.be.addr(), "edge": h.startEdge(t)}
	if _, err := exec.LookPath("haproxy"); err == nil {
		addr := benchkit.FreeAddr()
		_, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		conf, err := h.fx.haproxyConfig(p, h.be.addr())
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("haproxy", "-db", "-f", conf)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		targets["haproxy"] = addr
	} else {
		t.Log("haproxy not installed: checking direct and edge only")
	}
	for name, addr := range targets {
		c := h.client(t, addr)
		var marks int
		res := benchkit.Load{Conc: 4, Warm: 50 * time.Millisecond, Measure: 300 * time.Millisecond, ErrorPause: errorPause}.Run(c, func(bool) { marks++ })
		if res.Calls == 0 || res.Errors > 0 || marks != 2 {
			t.Errorf("%s: %d calls, %d errors (%v), %d marks", name, res.Calls, res.Errors, res.FirstErr, marks)
		}
		if res.Pct(0.5) <= 0 || res.Pct(0.99) < res.Pct(0.5) {
			t.Errorf("%s: percentiles p50 %s p99 %s", name, res.Pct(0.5), res.Pct(0.99))
		}
	}
}

func TestReportHelpers(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	cs := func(calls int, proxyCPU float64) benchkit.CallStats {
		return benchkit.CallStats{Calls: calls, ProxyCPU: proxyCPU}
	}
	rows := []row{{Config: "edge", Conc: 50, CallStats: cs(10, 30)}, {Config: "edge", Conc: 50, CallStats: cs(10, 20)},
		{Config: "edge", Conc: 50, CallStats: cs(10, 40)}}
	pair := []row{{Config: "edge", Conc: 50, Round: 1, CallStats: cs(1, 60)}, {Config: "haproxy", Conc: 50, Round: 1, CallStats: cs(1, 20)},
		{Config: "edge", Conc: 50, Round: 2, CallStats: cs(1, 80)}, {Config: "haproxy", Conc: 50, Round: 2, CallStats: cs(1, 20)}}
	if r := perRound(pair, "edge", "haproxy", 50, func(r row) float64 { return r.ProxyCPU }); r != 3.5 {
		t.Errorf("perRound = %v, want 3.5", r)
	}
	// The report renders without a direct row (-only edge,haproxy).
	res := &overheadResult{opts: overheadOpts{rounds: 2, concs: []int{50}}, size: 1024,
		configs: []config{{name: "edge"}, {name: "haproxy"}}, rows: pair}
	if rep := res.report("bin/meridian"); !strings.Contains(rep, "**3.50×** (70.0 vs 20.0 µs) [3.50×]") || !strings.Contains(rep, "| — | — | — |") {
		t.Errorf("report without direct:\n%s", rep)
	}
	if a, ok := aggregate(rows, "edge", 50); !ok || a.proxy != 30 || a.minProxy != 20 || a.maxProxy != 40 || a.rounds != 3 {
		t.Errorf("aggregate = %+v", a)
	}
}

// BenchmarkEdgeInProcess is a quick look at the edge's per-call cost
// without pinning or processes: go test -bench . -cpuprofile cpu.out
// ./test/edgebench/ (the numbers include the client and the backend).
func BenchmarkEdgeInProcess(b *testing.B) {
	h := newHarness(b)
	call := h.client(b, h.startEdge(b)).NewCaller()
	b.SetParallelism(50)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(context.Background()); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
