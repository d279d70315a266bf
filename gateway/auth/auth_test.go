package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/genproto/googleapis/api/serviceconfig"
)

func TestParseJWKSFormats(t *testing.T) {
	if _, err := ParseJWKS([]byte(`{"keys":[]}`)); err == nil {
		t.Error("empty JWK Set accepted")
	}
	if _, err := ParseJWKS([]byte(`{"k1":"not pem"}`)); err == nil || !strings.Contains(err.Error(), "not PEM") {
		t.Errorf("bad x509 map: %v", err)
	}
	if _, err := ParseJWKS([]byte(`[1,2]`)); err == nil {
		t.Error("a JSON array accepted")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "private"}}})
	if _, err := ParseJWKS(priv); err == nil {
		t.Error("a JWK Set of private keys only was accepted as verification keys")
	}
}

func TestAudienceNormalization(t *testing.T) {
	for _, c := range []struct {
		got, allowed string
		ok           bool
	}{
		{"https://svc.example.com", "svc.example.com", true},
		{"http://svc.example.com/", "svc.example.com", true},
		{"svc.example.com/", "https://svc.example.com", true},
		{"https://other.example.com", "svc.example.com", false},
	} {
		if got := audienceAllowed([]string{normalizeAudience(c.got)}, []string{normalizeAudience(c.allowed)}); got != c.ok {
			t.Errorf("aud %q vs %q = %v, want %v", c.got, c.allowed, got, c.ok)
		}
	}
}

// A real issuer: the verifier caches verified tokens (one signature check
// per token) and rate-limits refetches for unknown key ids.
func TestTokenCacheAndRefetchRateLimit(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256"}}})
	}))
	defer srv.Close()
	now := time.Now()
	v, err := NewVerifier(&serviceconfig.Authentication{Providers: []*serviceconfig.AuthProvider{{Id: "p", Issuer: "iss", JwksUri: srv.URL}}},
		Options{ServiceName: "svc", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(kid string, exp time.Time) string {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		tok, _ := jwt.Signed(s).Claims(jwt.Claims{Issuer: "iss", Subject: "u", Audience: jwt.Audience{"https://svc"}, Expiry: jwt.NewNumericDate(exp)}).Serialize()
		return tok
	}
	tok := mint("k1", now.Add(time.Hour))
	// Without fetching, a verifier that has no keys yet says so instead of
	// waiting for the issuer (and does not fetch).
	if _, err := v.Verify(WithoutFetch(context.Background()), tok, reqs("p")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("verify without fetch and no keys: %v, want ErrWouldBlock", err)
	}
	if n := fetches.Load(); n != 0 {
		t.Fatalf("%d JWKS fetches under WithoutFetch, want 0", n)
	}
	for range 5 {
		c, err := v.Verify(context.Background(), tok, reqs("p"))
		if err != nil || c.Subject != "u" {
			t.Fatalf("verify: %v", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches for one token verified 5 times, want 1", n)
	}
	// With keys at hand, a new token verifies without the network.
	if c, err := v.Verify(WithoutFetch(context.Background()), mint("k1", now.Add(30*time.Minute)), reqs("p")); err != nil || c.Subject != "u" {
		t.Fatalf("verify without fetch, keys cached: %v", err)
	}
	for range 5 {
		if _, err := v.Verify(context.Background(), mint("unknown", now.Add(time.Hour)), reqs("p")); err == nil {
			t.Fatal("unknown kid accepted")
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("unknown kids caused %d fetches within the rate limit, want none beyond the first", n-1)
	}
	// Cached tokens still expire.
	now = now.Add(2 * time.Hour)
	if _, err := v.Verify(context.Background(), tok, reqs("p")); err == nil {
		t.Fatal("an expired token was served from the cache")
	}
	// A provider not allowed for this method does not verify its tokens.
	if _, err := v.Verify(context.Background(), mint("k1", now.Add(time.Hour)), reqs("other")); err == nil {
		t.Fatal("token of a provider not in the rule accepted")
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("a.b.c")
	v, _ := NewVerifier(&serviceconfig.Authentication{Providers: []*serviceconfig.AuthProvider{{Id: "p", Issuer: "iss", JwksUri: "http://127.0.0.1:1/jwks"}}},
		Options{ServiceName: "svc", HTTPClient: &http.Client{Timeout: 10 * time.Millisecond}})
	f.Fuzz(func(t *testing.T, tok string) {
		if c, err := v.Verify(context.Background(), tok, reqs("p")); err == nil {
			t.Fatalf("fuzzed token %q verified as %+v", tok, c)
		}
	})
}
