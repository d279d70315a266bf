package edge

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHotReloadFailsNoRequest(t *testing.T) {
	r := newRig(t, "HTTPS")
	cfgPath := filepath.Join(r.ed.opts.Config, "edge.yaml")
	orig, _ := os.ReadFile(cfgPath)
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				if _, err := r.call("/test.Echo/GetRegion"); err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		})
	}
	// Change the failover order, then break the config, then restore it.
	waitUntil(t, 5*time.Second, "traffic to flow", func() bool { return ok.Load() > 0 })
	_ = os.WriteFile(cfgPath, []byte(strings.Replace(string(orig), "us-central1,europe-west1,asia-east1", "asia-east1,us-central1,europe-west1", 1)), 0o644)
	waitUntil(t, 5*time.Second, "the new failover order", func() bool {
		got, err := r.call("/test.Echo/GetRegion")
		return err == nil && got == "asia-east1"
	})
	_ = os.WriteFile(cfgPath, []byte("kind: MultiClusterIngress\nmetadata: {name: broken}\n"), 0o644)
	waitUntil(t, 5*time.Second, "the reload error to be reported", func() bool { return r.ed.Status().LastError != "" })
	if got, _ := r.call("/test.Echo/GetRegion"); got != "asia-east1" {
		t.Fatalf("a bad config replaced the good one: served by %q", got)
	}
	_ = os.WriteFile(cfgPath, orig, 0o644)
	waitUntil(t, 5*time.Second, "recovery", func() bool {
		got, err := r.call("/test.Echo/GetRegion")
		return err == nil && got == "us-central1" && r.ed.Status().LastError == ""
	})
	stop.Store(true)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 50 {
		t.Fatalf("during reloads: %d ok, %d failed", ok.Load(), failed.Load())
	}
}

func TestSessionAffinityByGeneratedCookie(t *testing.T) {
	r := newRig(t, "HTTPS")
	// Two endpoints in the local region, so affinity has a choice to make.
	cfgPath := filepath.Join(r.ed.opts.Config, "edge.yaml")
	b, _ := os.ReadFile(cfgPath)
	second := newGateway(t, r.caForTest(t), "us-central1")
	second.region = "us-central1-b"
	y := strings.Replace(string(b), "  endpoints: [{address: \""+r.gws["us-central1"].addr+"\"}]",
		"  endpoints: [{address: \""+r.gws["us-central1"].addr+"\"}, {address: \""+second.addr+"\"}]", 1)
	y = strings.Replace(y, "    type: HTTPS", "    type: HTTPS\n  sessionAffinity:\n    affinityType: GENERATED_COOKIE\n    affinityCookieTtlSec: 60", 1)
	_ = os.WriteFile(cfgPath, []byte(y), 0o644)
	waitUntil(t, 5*time.Second, "the second endpoint", func() bool { return len(r.ed.Status().Pools[0].Routing[0].Endpoints) == 2 })
	r.waitChecked(t)
	resp, err := r.https.Get(r.url + "/v1/region")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == affinityCookie {
			cookie = c.Value
		}
	}
	if cookie == "" || resp.Cookies()[0].MaxAge != 60 {
		t.Fatalf("no affinity cookie with the configured TTL: %v", resp.Header)
	}
	served := map[string]int{}
	for range 30 {
		req, _ := newReq(r.url+"/v1/region", affinityCookie+"="+cookie)
		resp, err := r.https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		served[string(body)]++
	}
	if len(served) != 1 {
		t.Fatalf("with one affinity cookie, requests went to %v; want one endpoint", served)
	}
	spread := map[string]int{}
	for range 30 { // a new client each time: a new cookie, spread over both
		resp, err := r.https.Get(r.url + "/v1/region")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		spread[string(body)]++
	}
	if len(spread) != 2 {
		t.Fatalf("new clients all went to %v; affinity should pin each client, not all of them", spread)
	}
}

// Regression: an endpoint that left the configuration kept its
// connections (a call pool and a health-check connection redialling a
// gone pod for ever), so a fleet whose pods come and go piled them up.
// Now the health-check connection closes at once and the call pool after
// the draining time, with the calls in flight finished.
func TestReloadClosesConnectionsOfRemovedEndpoints(t *testing.T) {
	r := newRig(t, "HTTPS")
	cfgPath := filepath.Join(r.ed.opts.Config, "edge.yaml")
	b, _ := os.ReadFile(cfgPath)
	old := r.gws["asia-east1"].addr
	moved := newGateway(t, r.caForTest(t), "asia-east1")
	y := strings.Replace(string(b), old, moved.addr, 1)
	y = strings.Replace(y, "  healthCheck:", "  connectionDraining: {drainingTimeoutSec: 1}\n  healthCheck:", 1)
	_ = os.WriteFile(cfgPath, []byte(y), 0o644)
	connected := func(addr string) (open, retired bool) {
		r.ed.mu.Lock()
		defer r.ed.mu.Unlock()
		_, open = r.ed.conns[addr]
		for u := range r.ed.retired {
			retired = retired || u.relay.Addr() == addr
		}
		return open, retired
	}
	waitUntil(t, 5*time.Second, "the new endpoint", func() bool { open, _ := connected(moved.addr); return open })
	if open, retired := connected(old); open || !retired {
		t.Fatalf("the removed endpoint %s: open %v, retired %v; want retired", old, open, retired)
	}
	// The draining time in the old configuration was the default (30 s);
	// the next reload retires with 1 s.
	_ = os.WriteFile(cfgPath, []byte(strings.Replace(y, moved.addr, r.gws["asia-east1"].addr, 1)), 0o644)
	waitUntil(t, 5*time.Second, "the endpoint back", func() bool { open, _ := connected(old); return open })
	waitUntil(t, 5*time.Second, "the second removed endpoint's pool to close after 1 s of draining", func() bool {
		open, retired := connected(moved.addr)
		return !open && !retired
	})
}

// Regression: every reload restarted every health checker, with its
// counts of consecutive results. A source reloading more often than the
// check interval (a Kubernetes fleet whose pods come and go) kept a dead
// endpoint healthy for ever: it never failed twice in a row.
func TestFrequentReloadsLetADeadEndpointGoUnhealthy(t *testing.T) {
	r := newRig(t, "HTTPS")
	cfgPath := filepath.Join(r.ed.opts.Config, "edge.yaml")
	orig, _ := os.ReadFile(cfgPath)
	r.gws["asia-east1"].kill()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(150 * time.Millisecond) // faster than the 1 s checks
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = os.WriteFile(cfgPath, append(slices.Clone(orig), fmt.Sprintf("# reload %d\n", i)...), 0o644)
		}
	})
	defer func() { close(stop); wg.Wait() }()
	healthy := func() bool {
		for _, rs := range r.ed.Status().Pools[0].Routing {
			if rs.Region == "asia-east1" {
				return rs.Endpoints[0].Healthy
			}
		}
		t.Fatal("no asia-east1 in status")
		return false
	}
	waitUntil(t, 10*time.Second, "reloads to happen", func() bool {
		return testutil.ToFloat64(r.ed.metrics.reloads.WithLabelValues("ok")) >= 3
	})
	waitUntil(t, 10*time.Second, "the dead endpoint to go unhealthy (2 failed checks, 1 s apart)", func() bool { return !healthy() })
}

// With --cert_dir (as with --source=kubernetes, the MCI's Secret mounted),
// a renewed certificate is served without a configuration change; one
// that does not load keeps the old.
func TestCertDirRenewalIsServed(t *testing.T) {
	r := newRig(t, "HTTPS")
	certDir := filepath.Join(r.ed.opts.Config, "session-scheduler-tls")
	ed, err := New(Options{Config: r.ed.opts.Config, CertDir: certDir, Region: "us-central1", Listen: "127.0.0.1:0",
		UpstreamCA: r.ca.File(t), ReloadInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = ed.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	addr, _ := ed.Addr()
	served := func() []byte {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: r.ca.Pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	first := served()
	_ = os.WriteFile(filepath.Join(certDir, "tls.key"), []byte("not a key"), 0o600)
	waitUntil(t, 5*time.Second, "the bad pair to be reported", func() bool {
		return slices.ContainsFunc(ed.events.list(), func(e Event) bool { return e.Kind == "reload-failed" })
	})
	if !bytes.Equal(served(), first) {
		t.Fatal("a pair that does not load replaced the certificate")
	}
	r.ca.Leaf(t).Write(t, certDir, "tls.crt", "tls.key")
	waitUntil(t, 5*time.Second, "the renewed certificate", func() bool { return !bytes.Equal(served(), first) })
}

// Regression: health checkers were made while holding the edge's lock,
// and a GRPC check on a port of its own (healthCheck.port) dials a new
// connection, which takes that lock: the reload hung, and the edge with
// it.
func TestGRPCCheckOnItsOwnPortDoesNotHangTheReload(t *testing.T) {
	r := newRig(t, "GRPC")
	cfgPath := filepath.Join(r.ed.opts.Config, "edge.yaml")
	b, _ := os.ReadFile(cfgPath)
	_, port, _ := net.SplitHostPort(r.gws["us-central1"].addr) // another port than the others'
	_ = os.WriteFile(cfgPath, []byte(strings.Replace(string(b), "    type: GRPC", "    type: GRPC\n    port: "+port, 1)), 0o644)
	reloaded := make(chan struct{})
	go func() {
		for !strings.Contains(r.ed.Status().Pools[0].HealthCheck, "GRPC") || testutil.ToFloat64(r.ed.metrics.reloads.WithLabelValues("ok")) < 1 {
			time.Sleep(10 * time.Millisecond) // poll interval
		}
		close(reloaded)
	}()
	select {
	case <-reloaded:
	case <-time.After(10 * time.Second):
		t.Fatal("the reload did not finish (the edge's lock held by a checker dialling)")
	}
	if got, err := r.call("/test.Echo/GetRegion"); err != nil || got != "us-central1" {
		t.Fatalf("after the reload: %q, %v", got, err)
	}
}
