package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/scheduler"
	"github.com/meridian-gw/meridian/scheduler/runtime"
	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// issuer is a real JWKS endpoint with real keys, serving a JWK Set, a
// Google-style x509 map, and OpenID discovery.
type issuer struct {
	srv     *httptest.Server
	rsa     *rsa.PrivateKey
	ec      *ecdsa.PrivateKey
	cert    *x509.Certificate
	fetches atomic.Int64
	down    atomic.Bool
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{}
	var err error
	if is.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if is.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &is.rsa.PublicKey, is.rsa)
	if err != nil {
		t.Fatal(err)
	}
	is.cert, _ = x509.ParseCertificate(der)
	mux := http.NewServeMux()
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		if is.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
			{Key: &is.rsa.PublicKey, KeyID: "rsa1", Algorithm: "RS256", Use: "sig"},
			{Key: &is.ec.PublicKey, KeyID: "ec1", Algorithm: "ES256", Use: "sig"},
		}})
	})
	mux.HandleFunc("/x509", func(w http.ResponseWriter, r *http.Request) {
		is.fetches.Add(1)
		_ = json.NewEncoder(w).Encode(map[string]string{
			"rsa1": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		})
	})
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	})
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) url() string { return is.srv.URL }

type tokenOpt func(*jwt.Claims, *jose.SigningKey, map[string]any)

func withAud(aud ...string) tokenOpt {
	return func(c *jwt.Claims, _ *jose.SigningKey, _ map[string]any) { c.Audience = aud }
}
func withIssuer(iss string) tokenOpt {
	return func(c *jwt.Claims, _ *jose.SigningKey, _ map[string]any) { c.Issuer = iss }
}
func withTimes(exp, nbf time.Time) tokenOpt {
	return func(c *jwt.Claims, _ *jose.SigningKey, _ map[string]any) {
		c.Expiry, c.NotBefore = jwt.NewNumericDate(exp), jwt.NewNumericDate(nbf)
	}
}
func withKid(kid string) tokenOpt {
	return func(_ *jwt.Claims, k *jose.SigningKey, _ map[string]any) {
		jwk := k.Key.(jose.JSONWebKey)
		jwk.KeyID = kid
		k.Key = jwk
	}
}
func withEC(is *issuer) tokenOpt {
	return func(_ *jwt.Claims, k *jose.SigningKey, _ map[string]any) {
		*k = jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: is.ec, KeyID: "ec1"}}
	}
}

// token mints a JWT signed by a real JOSE library.
func (is *issuer) token(t testing.TB, sub string, opts ...tokenOpt) string {
	t.Helper()
	now := time.Now()
	c := jwt.Claims{Issuer: is.url(), Subject: sub, Audience: jwt.Audience{"https://test.example.com"},
		Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute))}
	key := jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: is.rsa, KeyID: "rsa1"}}
	extra := map[string]any{"email": sub + "@example.com"}
	for _, o := range opts {
		o(&c, &key, extra)
	}
	signer, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(c).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noJWKSURI makes serviceConfig drop jwks_uri, so keys come from OpenID discovery.
const noJWKSURI = "-"

// serviceConfig is the seed's config with the test issuer, plus the
// scheduler's REST rules from deploy/service.yaml.
func serviceConfig(t *testing.T, is *issuer, jwksPath, extra string) string {
	t.Helper()
	seed, err := os.ReadFile("../deploy/service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer(
		"name: SERVICE_NAME", "name: test.example.com",
		"issuer: SERVICE_ACCOUNT", "issuer: "+is.url(),
		"jwks_uri: https://www.googleapis.com/robot/v1/metadata/x509/SERVICE_ACCOUNT", "jwks_uri: "+is.url()+jwksPath,
	).Replace(string(seed))
	if jwksPath == noJWKSURI {
		s = strings.Replace(s, "    jwks_uri: "+is.url()+jwksPath+"\n", "", 1)
	}
	path := filepath.Join(t.TempDir(), "service.yaml")
	if err := os.WriteFile(path, []byte(s+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// backend is a real scheduler on loopback, with health and reflection.
type backend struct {
	addr   string
	health *health.Server
	srv    *grpc.Server
	st     store.Store
}

func newBackend(t *testing.T) *backend {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg, _ := scheduler.ParseConfig([]byte(`pools: [{name: cpu, capacity: 100, maxPerUser: 100}]`))
	// No reconciler runs: sessions stay STARTING and no workload starts.
	sched, err := scheduler.New(scheduler.Options{Region: "us-central1", Config: cfg, Store: st,
		Runtime: &runtime.Local{Command: []string{"true"}}, WatchPoll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	peers, _ := scheduler.ParseTrustedPeers(scheduler.DefaultTrustedPeers)
	g := grpc.NewServer()
	scheduler.NewServer(sched, peers).Register(g)
	h := health.NewServer()
	healthpb.RegisterHealthServer(g, h)
	reflection.Register(g)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	return &backend{addr: ln.Addr().String(), health: h, srv: g, st: st}
}

// gw is a running gateway with clients for every protocol.
type gw struct {
	t     *testing.T
	g     *Gateway
	is    *issuer
	be    *backend
	roots *x509.CertPool
	ssl   string
	http  string
	h1    *http.Client // HTTP/1.1 over TLS
	h2    *http.Client // HTTP/2 over TLS
}

type gwOpt func(*Options)

func newGW(t *testing.T, opts ...gwOpt) *gw {
	t.Helper()
	is := newIssuer(t)
	be := newBackend(t)
	dir, roots := testcert.Dir(t)
	o := Options{
		ServiceConfig: serviceConfig(t, is, "/jwks", ""),
		Backend:       "grpc://" + be.addr,
		SSLAddr:       "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", StatusAddr: "127.0.0.1:0",
		CertDir: dir, Drain: 0, ReloadInterval: 50 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler),
	}
	for _, f := range opts {
		f(&o)
	}
	g, err := New(o)
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
	h := &gw{t: t, g: g, is: is, be: be, roots: roots, ssl: g.Addr("ssl"), http: g.Addr("http")}
	h.h1 = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots},
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	h.h2 = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	t.Cleanup(h.h1.CloseIdleConnections)
	t.Cleanup(h.h2.CloseIdleConnections)
	return h
}

var _ = schedulerv1.Session_RUNNING
var _ = fmt.Sprintf

// finishSession ends a session in the store, as its region's reconciler
// would (none runs in these tests).
func finishSession(t *testing.T, be *backend, name string) {
	t.Helper()
	ctx := context.Background()
	id := strings.TrimPrefix(name, "sessions/")
	err := be.st.Update(ctx, []string{"pool:us-central1/cpu"}, func(tx store.Tx) error {
		s, err := tx.Session(ctx, id)
		if err != nil {
			return err
		}
		s.State = schedulerv1.Session_STOPPED
		s.EndTime = time.Now()
		return tx.UpdateSession(ctx, s)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func newGWClient(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
}

func doReq(t *testing.T, c *http.Client, method, url, token, body string) resp {
	h := &gw{t: t}
	return h.do(c, method, url, token, body)
}
