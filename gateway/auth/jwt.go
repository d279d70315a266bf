// Package auth verifies callers the way Google's Extensible Service Proxy
// does: JWTs from the service config's authentication providers, and API
// keys. It fails closed: anything it cannot verify is refused.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/genproto/googleapis/api/serviceconfig"
	"google.golang.org/grpc/codes"
)

// Error is a refusal, with the HTTP status and gRPC code ESP would answer
// and a reason label for metrics.
type Error struct {
	HTTPStatus int
	Code       codes.Code
	Reason     string // e.g. "expired", "unknown_issuer"
	Message    string
}

func (e *Error) Error() string { return e.Message }

func unauthenticated(reason, format string, a ...any) *Error {
	return &Error{HTTPStatus: http.StatusUnauthorized, Code: codes.Unauthenticated, Reason: reason, Message: fmt.Sprintf(format, a...)}
}

// Allowed signature algorithms: asymmetric only, so "none" and HMAC signed
// with a public key are refused before any key is looked at.
var allowedAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// ClockSkew is the leeway for exp, nbf and iat (Envoy's default).
const ClockSkew = 60 * time.Second

// Provider is one authentication provider of the service config.
type Provider struct {
	ID        string
	Issuer    string
	Audiences []string // normalized; empty means the service's own name
	Locations []Location
	keys      *keySet
}

// Location is where a provider's token is read from.
type Location struct {
	Header      string // canonical header name, or ""
	Query       string // query parameter, or ""
	ValuePrefix string // e.g. "Bearer "
}

// DefaultLocations are ESP's: Authorization: Bearer, X-Goog-Iap-Jwt-Assertion,
// and the access_token query parameter.
var DefaultLocations = []Location{
	{Header: "Authorization", ValuePrefix: "Bearer "},
	{Header: "X-Goog-Iap-Jwt-Assertion"},
	{Query: "access_token"},
}

// Options configure a Verifier.
type Options struct {
	// ServiceName is the default audience (as "https://NAME").
	ServiceName string
	// HTTPClient fetches JWKS. Default: a client with a 10 s timeout.
	HTTPClient *http.Client
	// JWKSCacheDuration is how long fetched keys are used. Default 300 s.
	JWKSCacheDuration time.Duration
	// JWKSMinRefetch rate-limits refetches for unknown key ids and after
	// failures. Default 10 s.
	JWKSMinRefetch time.Duration
	// Now tells the time. Default time.Now.
	Now func() time.Time
	// OnJWKSFetch, when set, observes every JWKS fetch.
	OnJWKSFetch func(provider string, ok bool)
	// TokenCacheSize bounds the cache of verified tokens. Default 10000.
	TokenCacheSize int
}

// Verifier checks JWTs against the service config's providers.
type Verifier struct {
	providers map[string]*Provider
	byIssuer  map[string][]*Provider
	now       func() time.Time
	cache     *tokenCache
}

// Claims is a verified token.
type Claims struct {
	Provider string
	Subject  string
	Email    string
	Issuer   string
	// UserInfo is the payload as ESPv2 forwards it in X-Endpoint-API-UserInfo:
	// base64url, unpadded, of the raw JWT payload.
	UserInfo string
	Expiry   time.Time
}

// NewVerifier builds a verifier for the service config's providers.
func NewVerifier(a *serviceconfig.Authentication, opts Options) (*Verifier, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.JWKSCacheDuration <= 0 {
		opts.JWKSCacheDuration = 300 * time.Second
	}
	if opts.JWKSMinRefetch <= 0 {
		opts.JWKSMinRefetch = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenCacheSize <= 0 {
		opts.TokenCacheSize = 10000
	}
	v := &Verifier{providers: map[string]*Provider{}, byIssuer: map[string][]*Provider{}, now: opts.Now,
		cache: &tokenCache{max: opts.TokenCacheSize, m: map[string]*Claims{}}}
	for i, p := range a.GetProviders() {
		pr := &Provider{ID: p.GetId(), Issuer: p.GetIssuer()}
		for _, aud := range strings.Split(p.GetAudiences(), ",") {
			if aud = strings.TrimSpace(aud); aud != "" {
				pr.Audiences = append(pr.Audiences, normalizeAudience(aud))
			}
		}
		if len(pr.Audiences) == 0 {
			pr.Audiences = []string{normalizeAudience("https://" + opts.ServiceName)}
		}
		for j, l := range p.GetJwtLocations() {
			loc := Location{ValuePrefix: l.GetValuePrefix()}
			switch {
			case l.GetHeader() != "":
				loc.Header = http.CanonicalHeaderKey(l.GetHeader())
			case l.GetQuery() != "":
				loc.Query = l.GetQuery()
			default:
				return nil, fmt.Errorf("authentication.providers[%d].jwt_locations[%d]: set header or query", i, j)
			}
			pr.Locations = append(pr.Locations, loc)
		}
		if len(pr.Locations) == 0 {
			pr.Locations = DefaultLocations
		}
		if u := p.GetJwksUri(); u != "" {
			if _, err := url.ParseRequestURI(u); err != nil {
				return nil, fmt.Errorf("authentication.providers[%d].jwks_uri = %q: %w", i, u, err)
			}
		}
		pr.keys = &keySet{uri: p.GetJwksUri(), issuer: p.GetIssuer(), client: opts.HTTPClient, ttl: opts.JWKSCacheDuration,
			minRetry: opts.JWKSMinRefetch, now: opts.Now, onFetch: opts.OnJWKSFetch, provider: pr.ID}
		v.providers[pr.ID] = pr
		v.byIssuer[pr.Issuer] = append(v.byIssuer[pr.Issuer], pr)
	}
	return v, nil
}

// Provider returns a provider by id.
func (v *Verifier) Provider(id string) (*Provider, bool) {
	p, ok := v.providers[id]
	return p, ok
}

// normalizeAudience drops the scheme and a trailing slash, as ESP does.
func normalizeAudience(a string) string {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "https://"), "http://")
	return strings.TrimSuffix(a, "/")
}

// Verify checks raw against the allowed providers: signature by the
// issuer's keys, exp/nbf/iat, and audience. An issuer that none of the
// allowed providers has is 401; an audience not allowed is 403.
func (v *Verifier) Verify(ctx context.Context, raw string, allowed []string) (*Claims, error) {
	now := v.now()
	// A token verified before costs one map lookup: parsing it (base64 and
	// two JSON documents) would cost more than all the rest of a proxied call.
	if c := v.cache.get(raw, now); c != nil && slices.Contains(allowed, c.Provider) {
		return c, nil
	}
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		if strings.Contains(err.Error(), "unexpected signature algorithm") {
			return nil, unauthenticated("bad_algorithm", "Jwt verification fails: the token's signature algorithm is not allowed (asymmetric algorithms only)")
		}
		return nil, unauthenticated("malformed", "Jwt is not in the form of Header.Payload.Signature")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, unauthenticated("malformed", "Jwt payload is not a JSON object with standard claims")
	}
	var p *Provider
	for _, cand := range v.byIssuer[unverified.Issuer] {
		for _, id := range allowed {
			if cand.ID == id {
				p = cand
			}
		}
	}
	if p == nil {
		return nil, unauthenticated("unknown_issuer", "Jwt issuer is not configured")
	}
	claims, err := v.verifyWith(ctx, p, tok, raw, now)
	if err != nil {
		return nil, err
	}
	v.cache.put(raw, claims, now)
	return claims, nil
}

func (v *Verifier) verifyWith(ctx context.Context, p *Provider, tok *jwt.JSONWebToken, raw string, now time.Time) (*Claims, error) {
	kid := tok.Headers[0].KeyID
	alg := tok.Headers[0].Algorithm
	keys, err := p.keys.get(ctx, false)
	if errors.Is(err, ErrWouldBlock) {
		return nil, err
	}
	if err != nil {
		return nil, &Error{HTTPStatus: http.StatusUnauthorized, Code: codes.Unauthenticated, Reason: "jwks_unavailable",
			Message: fmt.Sprintf("Jwks remote fetch is failed: %v", err)}
	}
	cands := matchKeys(keys, kid, alg)
	if len(cands) == 0 && kid != "" {
		switch keys, err = p.keys.get(ctx, true); {
		case err == nil:
			cands = matchKeys(keys, kid, alg)
		case errors.Is(err, ErrWouldBlock):
			return nil, err
		}
	}
	if len(cands) == 0 {
		return nil, unauthenticated("unknown_kid", "Jwt verification fails: no key with kid %q for issuer %s", kid, p.Issuer)
	}
	var std jwt.Claims
	var extra struct {
		Email string `json:"email"`
	}
	verified := false
	for _, k := range cands {
		if err := tok.Claims(k.Key, &std, &extra); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, unauthenticated("bad_signature", "Jwt verification fails: signature does not match")
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Time: now}, ClockSkew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, unauthenticated("expired", "Jwt is expired")
		case errors.Is(err, jwt.ErrNotValidYet):
			return nil, unauthenticated("not_yet_valid", "Jwt not yet valid")
		case errors.Is(err, jwt.ErrIssuedInTheFuture):
			return nil, unauthenticated("issued_in_future", "Jwt issued in the future")
		}
		return nil, unauthenticated("invalid_claims", "Jwt claims are not valid: %v", err)
	}
	if std.Expiry == nil {
		return nil, unauthenticated("no_expiry", "Jwt has no exp claim")
	}
	if !audienceAllowed(std.Audience, p.Audiences) {
		return nil, &Error{HTTPStatus: http.StatusForbidden, Code: codes.PermissionDenied, Reason: "audience",
			Message: "Audiences in Jwt are not allowed"}
	}
	payload := strings.Split(raw, ".")[1]
	return &Claims{Provider: p.ID, Subject: std.Subject, Email: extra.Email, Issuer: std.Issuer,
		UserInfo: strings.TrimRight(payload, "="), Expiry: std.Expiry.Time()}, nil
}

func matchKeys(keys []jose.JSONWebKey, kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		out = append(out, k)
	}
	return out
}

func audienceAllowed(got jwt.Audience, allowed []string) bool {
	for _, g := range got {
		g = normalizeAudience(g)
		for _, a := range allowed {
			if g == a {
				return true
			}
		}
	}
	return false
}

// DecodeUserInfo returns the JSON payload of an X-Endpoint-API-UserInfo value.
func DecodeUserInfo(v string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(v) }

// tokenCache remembers verified tokens until they expire, so that the
// signature (about 30 µs for RS256) is checked once per token, not per call.
type tokenCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*Claims
}

func (c *tokenCache) get(k string, now time.Time) *Claims {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.m[k]
	if !ok {
		return nil
	}
	if !now.Before(cl.Expiry.Add(ClockSkew)) {
		delete(c.m, k)
		return nil
	}
	return cl
}

func (c *tokenCache) put(k string, cl *Claims, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for key, v := range c.m { // drop expired first, then anything
			if !now.Before(v.Expiry) || len(c.m) >= c.max {
				delete(c.m, key)
			}
			if len(c.m) < c.max*9/10 {
				break
			}
		}
	}
	c.m[k] = cl
}

// HashKey is how API keys are stored: hex SHA-256.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return fmt.Sprintf("%x", sum)
}
