package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/genproto/googleapis/api/serviceconfig"
	"google.golang.org/grpc/codes"
)

// reqs is a rule that admits any of the providers, each with its own audiences.
func reqs(ids ...string) []Requirement {
	out := make([]Requirement, len(ids))
	for i, id := range ids {
		out[i] = Requirement{ProviderID: id}
	}
	return out
}

// signer is a real key served as a JWK Set by a real HTTP server.
type signer struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks *httptest.Server
}

func newSigner(t *testing.T, kid string) *signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &signer{key: key, kid: kid}
	s.jwks = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "ES256"}}})
	}))
	t.Cleanup(s.jwks.Close)
	return s
}

type claimsOpt func(*jwt.Claims, map[string]any)

func aud(a ...string) claimsOpt { return func(c *jwt.Claims, _ map[string]any) { c.Audience = a } }
func sub(s string) claimsOpt    { return func(c *jwt.Claims, _ map[string]any) { c.Subject = s } }
func email(e string) claimsOpt  { return func(_ *jwt.Claims, x map[string]any) { x["email"] = e } }

func (s *signer) mint(t *testing.T, iss string, opts ...claimsOpt) string {
	t.Helper()
	c := jwt.Claims{Issuer: iss, Subject: "u", Audience: jwt.Audience{"https://svc"}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}
	extra := map[string]any{}
	for _, o := range opts {
		o(&c, extra)
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.key, KeyID: s.kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sg).Claims(c).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newTestVerifier(t *testing.T, opts Options, providers ...*serviceconfig.AuthProvider) *Verifier {
	t.Helper()
	if opts.ServiceName == "" {
		opts.ServiceName = "svc"
	}
	v, err := NewVerifier(&serviceconfig.Authentication{Providers: providers}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantRefusal(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Code != code || e.Reason != reason {
		t.Fatalf("got %v; want %s with reason %q", err, code, reason)
	}
}

// Regression: a requirement's audiences were ignored, so a token minted
// for batch-jobs passed a rule that says `audiences: scheduler`. They
// replace the provider's audiences (and the https://SERVICE_NAME default)
// for that rule, as in ESPv2.
func TestRequirementAudiencesOverrideTheProviders(t *testing.T) {
	s := newSigner(t, "k1")
	v := newTestVerifier(t, Options{}, &serviceconfig.AuthProvider{Id: "p", Issuer: "iss", JwksUri: s.jwks.URL, Audiences: "batch-jobs, https://svc"})
	ctx := context.Background()
	batch := s.mint(t, "iss", aud("batch-jobs"))
	sched := s.mint(t, "iss", aud("https://scheduler/"))
	svc := s.mint(t, "iss", aud("https://svc"))
	ruleScheduler := []Requirement{NewRequirement("p", "scheduler")}
	ruleProvider := []Requirement{NewRequirement("p", "")}

	// The provider's own list, where the rule says nothing.
	for _, tok := range []string{batch, svc} {
		if _, err := v.Verify(ctx, tok, ruleProvider); err != nil {
			t.Fatalf("provider audiences: %v", err)
		}
	}
	if _, err := v.Verify(ctx, sched, ruleProvider); err == nil {
		t.Fatal("a scheduler token passed a rule with the provider's audiences (batch-jobs, svc)")
	}
	// The rule's list, alone: neither the provider's list nor the default.
	// The batch-jobs token is cached by now: the cache must not bypass it.
	wantRefusal(t, verr(v.Verify(ctx, batch, ruleScheduler)), codes.PermissionDenied, "audience")
	wantRefusal(t, verr(v.Verify(ctx, svc, ruleScheduler)), codes.PermissionDenied, "audience")
	if c, err := v.Verify(ctx, sched, ruleScheduler); err != nil || c.Subject != "u" {
		t.Fatalf("a scheduler token under audiences: scheduler: %v", err)
	}
	// Any requirement of a rule admits: here one per audience list.
	either := []Requirement{NewRequirement("p", "scheduler"), NewRequirement("p", "notebooks,batch-jobs")}
	for _, tok := range []string{sched, batch} {
		if _, err := v.Verify(ctx, tok, either); err != nil {
			t.Fatalf("rule with two requirements of one provider: %v", err)
		}
	}
}

func verr(_ *Claims, err error) error { return err }

// Regression: of several providers with one issuer only the last was
// tried, so a valid token got a false 401 (keys of another provider) or
// 403 (audiences of another provider).
func TestEveryProviderOfAnIssuerIsTried(t *testing.T) {
	a, b := newSigner(t, "ka"), newSigner(t, "kb")
	v := newTestVerifier(t, Options{},
		&serviceconfig.AuthProvider{Id: "a", Issuer: "iss", JwksUri: a.jwks.URL, Audiences: "aud-a"},
		&serviceconfig.AuthProvider{Id: "b", Issuer: "iss", JwksUri: b.jwks.URL, Audiences: "aud-b"})
	ctx := context.Background()
	both := reqs("a", "b")
	for _, c := range []struct {
		name, tok, provider string
	}{
		{"keys of the first, its audience", a.mint(t, "iss", aud("aud-a")), "a"},
		{"keys of the second, its audience", b.mint(t, "iss", aud("aud-b")), "b"},
	} {
		got, err := v.Verify(ctx, c.tok, both)
		if err != nil || got.Provider != c.provider {
			t.Fatalf("%s: %v %v; want verified by provider %q", c.name, got, err, c.provider)
		}
	}
	// Signed by a's key, for b's audience: no provider accepts both; the
	// answer names the check the token got furthest in (a's keys verified
	// it, its audience did not match), not b's unknown key.
	wantRefusal(t, verr(v.Verify(ctx, a.mint(t, "iss", aud("aud-b")), both)), codes.PermissionDenied, "audience")
	// A rule that allows only one of them still tries only that one.
	wantRefusal(t, verr(v.Verify(ctx, b.mint(t, "iss", aud("aud-b")), reqs("a"))), codes.Unauthenticated, "unknown_kid")
	wantRefusal(t, verr(v.Verify(ctx, a.mint(t, "iss", aud("aud-a")), reqs("nobody"))), codes.Unauthenticated, "unknown_issuer")
}

// Without the network, a provider whose keys must be fetched does not
// hide another that accepts the token with the keys at hand; and when
// none does, the caller is told to verify again with fetching allowed.
func TestWithoutFetchTriesProvidersWithKeysFirst(t *testing.T) {
	a, b := newSigner(t, "ka"), newSigner(t, "kb")
	v := newTestVerifier(t, Options{},
		&serviceconfig.AuthProvider{Id: "a", Issuer: "iss", JwksUri: a.jwks.URL},
		&serviceconfig.AuthProvider{Id: "b", Issuer: "iss", JwksUri: b.jwks.URL})
	ctx := context.Background()
	if _, err := v.Verify(ctx, b.mint(t, "iss"), reqs("b")); err != nil { // b's keys fetched
		t.Fatal(err)
	}
	if c, err := v.Verify(WithoutFetch(ctx), b.mint(t, "iss", sub("v")), reqs("a", "b")); err != nil || c.Provider != "b" {
		t.Fatalf("verify without fetch, a's keys unknown, b's at hand: %v %v", c, err)
	}
	if _, err := v.Verify(WithoutFetch(ctx), a.mint(t, "iss"), reqs("a", "b")); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("a's token, a's keys not fetched yet: %v; want ErrWouldBlock", err)
	}
}

// Owners: with one issuer, the subject (else the email), as the scheduler
// has always named them; with two, ISSUER#SUBJECT, so two issuers' "alice"
// are two owners.
func TestOwnerIsQualifiedByIssuerWhenThereAreSeveral(t *testing.T) {
	a, b := newSigner(t, "ka"), newSigner(t, "kb")
	ctx := context.Background()
	one := newTestVerifier(t, Options{}, &serviceconfig.AuthProvider{Id: "a", Issuer: "https://a.example", JwksUri: a.jwks.URL},
		&serviceconfig.AuthProvider{Id: "a2", Issuer: "https://a.example", JwksUri: a.jwks.URL, Audiences: "other"})
	two := newTestVerifier(t, Options{}, &serviceconfig.AuthProvider{Id: "a", Issuer: "https://a.example", JwksUri: a.jwks.URL},
		&serviceconfig.AuthProvider{Id: "b", Issuer: "https://b.example", JwksUri: b.jwks.URL})
	for _, c := range []struct {
		name  string
		v     *Verifier
		tok   string
		rule  []Requirement
		owner string
	}{
		{"one issuer (two providers of it), sub", one, a.mint(t, "https://a.example", sub("alice")), reqs("a"), "alice"},
		{"one issuer, no sub: email", one, a.mint(t, "https://a.example", sub(""), email("al@x.org")), reqs("a"), "al@x.org"},
		{"two issuers, first", two, a.mint(t, "https://a.example", sub("alice")), reqs("a", "b"), "https://a.example#alice"},
		{"two issuers, second", two, b.mint(t, "https://b.example", sub("alice")), reqs("a", "b"), "https://b.example#alice"},
		{"two issuers, email", two, b.mint(t, "https://b.example", sub(""), email("al@x.org")), reqs("b"), "https://b.example#al@x.org"},
		{"neither sub nor email", two, b.mint(t, "https://b.example", sub("")), reqs("b"), ""},
	} {
		got, err := c.v.Verify(ctx, c.tok, c.rule)
		if err != nil || got.Owner != c.owner {
			t.Errorf("%s: owner %q (%v), want %q", c.name, ownerOf(got), err, c.owner)
		}
	}
	// A name that cannot travel as a header value is refused, never
	// forwarded half-way (nor left for the backend to fall back on sub).
	for _, bad := range []string{"al ice", "al\u00e9", strings.Repeat("x", MaxOwnerLen-len("https://a.example#")+1)} {
		_, err := two.Verify(ctx, a.mint(t, "https://a.example", sub(bad)), reqs("a"))
		wantRefusal(t, err, codes.Unauthenticated, "bad_owner")
	}
	if _, err := one.Verify(ctx, a.mint(t, "https://a.example", sub(strings.Repeat("x", MaxOwnerLen))), reqs("a")); err != nil {
		t.Fatalf("an owner of exactly %d bytes: %v", MaxOwnerLen, err)
	}
}

func ownerOf(c *Claims) string {
	if c == nil {
		return ""
	}
	return c.Owner
}

// The verified-token cache is bounded, drops the least recently used
// token when full (an O(1) insert, where the old cache rescanned every
// entry under its lock), and never serves an expired token.
func TestTokenCacheIsBoundedLRU(t *testing.T) {
	s := newSigner(t, "k1")
	now := time.Now()
	v := newTestVerifier(t, Options{TokenCacheSize: 8, Now: func() time.Time { return now }},
		&serviceconfig.AuthProvider{Id: "p", Issuer: "iss", JwksUri: s.jwks.URL})
	ctx := context.Background()
	hot := s.mint(t, "iss", sub("hot"))
	if _, err := v.Verify(ctx, hot, reqs("p")); err != nil {
		t.Fatal(err)
	}
	// A caller with many valid tokens (say, one per call) cannot grow it.
	for i := range 100 {
		if _, err := v.Verify(ctx, s.mint(t, "iss", sub(fmt.Sprint("flood-", i))), reqs("p")); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(ctx, hot, reqs("p")); err != nil { // used all along: stays
			t.Fatal(err)
		}
	}
	if n := v.cache.Len(); n != 8 {
		t.Fatalf("cache holds %d tokens, want its bound, 8", n)
	}
	if !v.cache.Contains(hot) {
		t.Fatal("the token in constant use was evicted before the flood's")
	}
	now = now.Add(2 * time.Hour)
	if _, err := v.Verify(ctx, hot, reqs("p")); err == nil {
		t.Fatal("an expired token was served from the cache")
	}
	if v.cache.Contains(hot) {
		t.Fatal("an expired token stayed in the cache after it was read")
	}
	off := newTestVerifier(t, Options{TokenCacheSize: -1}, &serviceconfig.AuthProvider{Id: "p", Issuer: "iss", JwksUri: s.jwks.URL})
	if _, err := off.Verify(ctx, s.mint(t, "iss"), reqs("p")); err != nil || off.cache != nil {
		t.Fatalf("cache off: %v, cache %v", err, off.cache)
	}
}

// Refusals are told apart by type, not by the library's text: alg "none"
// and HMAC are bad_algorithm; an echoed key id is clipped.
func TestRefusalsAreTypedAndEchoLittle(t *testing.T) {
	s := newSigner(t, "k1")
	v := newTestVerifier(t, Options{JWKSMinRefetch: time.Hour}, &serviceconfig.AuthProvider{Id: "p", Issuer: "iss", JwksUri: s.jwks.URL})
	ctx := context.Background()
	enc := base64.RawURLEncoding.EncodeToString
	body := enc([]byte(`{"iss":"iss","sub":"m","aud":"https://svc","exp":9999999999}`))
	for _, head := range []string{`{"alg":"none"}`, `{"alg":"HS256","kid":"k1"}`} {
		wantRefusal(t, verr(v.Verify(ctx, enc([]byte(head))+"."+body+"."+enc([]byte("sig")), reqs("p"))), codes.Unauthenticated, "bad_algorithm")
	}
	long := strings.Repeat("k", 10000)
	sg, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.key, KeyID: long}}, nil)
	tok, _ := jwt.Signed(sg).Claims(jwt.Claims{Issuer: "iss", Audience: jwt.Audience{"svc"}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).Serialize()
	_, err := v.Verify(ctx, tok, reqs("p"))
	wantRefusal(t, err, codes.Unauthenticated, "unknown_kid")
	if msg := err.Error(); len(msg) > 200 || !strings.Contains(msg, strings.Repeat("k", ClipLen)+"…") {
		t.Fatalf("a 10,000-byte kid echoed as %d bytes: %.300s", len(msg), msg)
	}
	if got := Clip(strings.Repeat("é", 40)); len(got) > ClipLen+len("…") || !strings.HasSuffix(got, "é…") {
		t.Fatalf("Clip cut inside a rune: %q", got)
	}
}
