package gateway

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/internal/testcert"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestAPIKeysEstablishIdentity(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	write := func(consumer, key string) {
		old, _ := os.Stat(keys)
		_ = os.WriteFile(keys, []byte(fmt.Sprintf("keys:\n- consumer: %s\n  sha256: %s\n", consumer, auth.HashKey(key))), 0o644)
		if old != nil {
			// A reload sees a change by mtime and size, and the new file
			// has the old one's size: give it a later mtime than a write
			// within the file system's timestamp granularity would.
			later := old.ModTime().Add(time.Second)
			_ = os.Chtimes(keys, later, later)
		}
	}
	write("team-a", "k-123")
	h := newGW(t, func(o *Options) { o.APIKeys = keys })
	// Without a JWT, ListSessions (JWT required) is refused even with a key:
	// the authentication rule still applies.
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions?key=k-123"), "", ""); r.code != 401 {
		t.Fatalf("key without the required JWT: %d", r.code)
	}
	tok := h.is.token(t, "alice")
	for _, c := range []struct {
		url  string
		hdr  []string
		code int
	}{
		{"/v1/sessions?key=k-123", nil, 200},
		{"/v1/sessions?api_key=k-123", nil, 200},
		{"/v1/sessions", []string{"X-Api-Key", "k-123"}, 200},
		{"/v1/sessions?key=wrong", nil, 400},
	} {
		r := h.do(h.h1, "GET", h.tls(c.url), tok, "", c.hdr...)
		if r.code != c.code {
			t.Errorf("%s %v: %d %s, want %d", c.url, c.hdr, r.code, r.body, c.code)
		}
	}
	// Hot reload: the old key stops working, the new one works.
	write("team-b", "k-456")
	waitFor(t, func() bool { return h.do(h.h1, "GET", h.tls("/v1/sessions?key=k-456"), tok, "").code == 200 }, "the new API key")
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions?key=k-123"), tok, ""); r.code != 400 {
		t.Fatalf("removed key still accepted: %d", r.code)
	}
}

func TestUnregisteredCallsNeedIdentity(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	_ = os.WriteFile(keys, []byte("keys:\n- consumer: ci\n  sha256: "+auth.HashKey("ci-key")+"\n"), 0o644)
	h := newGW(t, func(o *Options) {
		o.APIKeys = keys
		b, _ := os.ReadFile(o.ServiceConfig)
		// GetQuota: no JWT rule of its own, but identity still required.
		s := strings.Replace(string(b), "  - selector: grpc.health.v1.Health.Check\n    allow_without_credential: true",
			"  - selector: grpc.health.v1.Health.Check\n    allow_without_credential: true\n  - selector: meridian.scheduler.v1.SessionScheduler.GetQuota\n    allow_without_credential: true", 1)
		_ = os.WriteFile(o.ServiceConfig, []byte(s), 0o644)
	})
	r := h.do(h.h1, "GET", h.tls("/v1/quota"), "", "")
	if r.code != 401 || !strings.Contains(r.body, "Method doesn't allow unregistered callers") {
		t.Fatalf("no identity: %d %s", r.code, r.body)
	}
	// An API key is an established identity (the scheduler itself then
	// wants a caller, so it answers UNAUTHENTICATED: the gateway let it through).
	r = h.do(h.h1, "GET", h.tls("/v1/quota?key=ci-key"), "", "")
	if r.code == 401 && strings.Contains(r.body, "unregistered") {
		t.Fatalf("API key not accepted as identity: %d %s", r.code, r.body)
	}
	// A bad token is refused even where no token is needed.
	r = h.do(h.h1, "GET", h.tls("/v1/quota?key=ci-key"), "bad.token.here", "")
	if r.code != 401 {
		t.Fatalf("bad token on allow_without_credential: %d %s", r.code, r.body)
	}
}

func TestX509JWKSAndOpenIDDiscovery(t *testing.T) {
	for _, path := range []string{"/x509", noJWKSURI} {
		is := newIssuer(t)
		h := newGW(t, func(o *Options) { o.ServiceConfig = serviceConfig(t, is, path, "") })
		h.is = is
		tok := is.token(t, "alice")
		if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), tok, ""); r.code != 200 {
			t.Fatalf("jwks %q: %d %s", path, r.code, r.body)
		}
	}
}

func TestLastGoodKeysServeWhileIssuerIsDown(t *testing.T) {
	h := newGW(t, func(o *Options) { o.JWKSCacheDuration = 50 * time.Millisecond })
	tok := h.is.token(t, "alice")
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), tok, ""); r.code != 200 {
		t.Fatal(r.body)
	}
	h.is.down.Store(true)
	// The keys must be older than JWKSCacheDuration: the time passing is
	// what is tested, and the gateway takes no clock (auth's own tests
	// drive the same path with one).
	time.Sleep(100 * time.Millisecond)
	tok2 := h.is.token(t, "bob") // not cached: needs keys again
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), tok2, ""); r.code != 200 {
		t.Fatalf("issuer down, last good keys should verify: %d %s", r.code, r.body)
	}
}

func TestQuotaLimitsPerConsumer(t *testing.T) {
	is := newIssuer(t)
	quota := `
metrics:
- name: list-requests
  metric_kind: DELTA
  value_type: INT64
quota:
  limits:
  - name: list-per-minute
    metric: list-requests
    unit: 1/min/{project}
    values: {STANDARD: 3}
  metric_rules:
  - selector: meridian.scheduler.v1.SessionScheduler.ListSessions
    metric_costs: {list-requests: 1}
`
	h := newGW(t, func(o *Options) { o.ServiceConfig = serviceConfig(t, is, "/jwks", quota) })
	h.is = is
	alice, bob := is.token(t, "alice"), is.token(t, "bob")
	for i := range 3 {
		if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), alice, ""); r.code != 200 {
			t.Fatalf("call %d within quota: %d %s", i, r.code, r.body)
		}
	}
	r := h.do(h.h1, "GET", h.tls("/v1/sessions"), alice, "")
	if r.code != 429 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, "Quota exceeded") {
		t.Fatalf("over quota: %d %s %v", r.code, r.body, r.header)
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), bob, ""); r.code != 200 {
		t.Fatalf("another consumer is not charged for alice: %d", r.code)
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/quota"), alice, ""); r.code != 200 {
		t.Fatalf("an unmetered method: %d", r.code)
	}
}

func TestCORSPreflightAndHealthz(t *testing.T) {
	h := newGW(t, func(o *Options) {
		o.CORS = CORSOptions{Preset: "basic", AllowOrigin: "https://app.example.com"}
		o.Healthz = "/healthz"
	})
	r := h.do(h.h1, "OPTIONS", h.tls("/v1/sessions"), "", "", "Origin", "https://app.example.com", "Access-Control-Request-Method", "POST")
	if r.code != 204 || r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight: %d %v", r.code, r.header)
	}
	r = h.do(h.h1, "OPTIONS", h.tls("/v1/sessions"), "", "", "Origin", "https://evil.example.com", "Access-Control-Request-Method", "POST")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("foreign origin allowed: %v", r.header)
	}
	if r := h.do(http.DefaultClient, "GET", h.plain("/healthz"), "", ""); r.code != 200 {
		t.Fatalf("--healthz: %d", r.code)
	}
}

func TestBodyLimitAndH2CPort(t *testing.T) {
	h := newGW(t, func(o *Options) { o.ClientMaxBodySize = 100; o.HTTP2Addr = "127.0.0.1:0" })
	tok := h.is.token(t, "alice")
	r := h.do(h.h1, "POST", h.tls("/v1/sessions"), tok, `{"pool":"`+strings.Repeat("x", 200)+`"}`)
	if r.code != 413 {
		t.Fatalf("oversized body: %d %s", r.code, r.body)
	}
	conn, err := grpc.NewClient(h.g.Addr("http2"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := schedulerv1.NewSessionSchedulerClient(conn).CreateSession(bearer(tok), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
	if err != nil || s.Owner != "alice" {
		t.Fatalf("gRPC over h2c port: %v", err)
	}
}

func TestManagedRolloutSwapsConfigWithNoFailedRequest(t *testing.T) {
	h := newGW(t, func(o *Options) { o.Rollout = "managed" })
	tok := h.is.token(t, "alice")
	gc := h.grpcClient()
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{PageSize: 1})
				r := h.do(h.h2, "GET", h.tls("/v1/quota"), tok, "")
				if err != nil || r.code != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprint(err, r.code, r.body))
				} else {
					ok.Add(1)
				}
			}
		})
	}
	cfg := h.g.opts.ServiceConfig
	orig, _ := os.ReadFile(cfg)
	// Requests flow (or fail) before the first change, and after the last.
	served := func(n int64) func() bool {
		return func() bool { return failed.Load() > 0 || ok.Load() >= n }
	}
	waitFor(t, served(5), "requests before the first reload")
	// Add a route, break the config (kept out), rotate the certificate.
	_ = os.WriteFile(cfg, []byte(strings.Replace(string(orig), "get: /v1/quota", "get: /v1/quota\n    additional_bindings:\n    - get: /v1/me/quota", 1)), 0o644)
	waitFor(t, func() bool { return h.do(h.h2, "GET", h.tls("/v1/me/quota"), tok, "").code == 200 }, "new route")
	_ = os.WriteFile(cfg, []byte("name: [broken"), 0o644)
	waitFor(t, func() bool { return h.g.Status().LastReloadError != "" }, "reload error reported")
	if r := h.do(h.h2, "GET", h.tls("/v1/me/quota"), tok, ""); r.code != 200 {
		t.Fatalf("bad config replaced the good one: %d", r.code)
	}
	newDir, _ := testcert.Dir(t)
	for _, n := range []string{"server.crt", "server.key"} {
		b, _ := os.ReadFile(filepath.Join(newDir, n))
		_ = os.WriteFile(filepath.Join(h.g.opts.CertDir, n), b, 0o600)
	}
	_ = os.WriteFile(cfg, orig, 0o644)
	waitFor(t, func() bool { return h.g.Status().LastReloadError == "" }, "recovery")
	waitFor(t, served(max(20, ok.Load()+8)), "requests after the last reload")
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() < 20 {
		t.Fatalf("during reloads: %d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	t.Logf("%d requests, none failed, across 3 reloads", ok.Load())
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
