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
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	lru "github.com/hashicorp/golang-lru/v2"
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

// ClipLen is how much of a caller's own text (a key id, a path) an error
// message repeats: refusals are queued per connection and sent back, so
// a caller must not be able to make them large.
const ClipLen = 64

// Clip shortens s to ClipLen bytes (on a rune boundary) with an ellipsis.
func Clip(s string) string {
	if len(s) <= ClipLen {
		return s
	}
	n := ClipLen
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

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
	// TokenCacheSize bounds the cache of verified tokens (least recently
	// used first out). Default DefaultTokenCacheSize; negative: no cache.
	TokenCacheSize int
}

// DefaultTokenCacheSize is how many verified tokens are remembered: about
// 2.5 KB each with a 1 KB token, so 25 MB when full.
const DefaultTokenCacheSize = 10000

// MaxOwnerLen bounds an owner name (the scheduler refuses longer ones too).
const MaxOwnerLen = 256

// Verifier checks JWTs against the service config's providers.
type Verifier struct {
	providers map[string]*Provider
	// qualify: more than one issuer is configured, so owners are named
	// ISSUER#SUBJECT (a subject is unique only within its issuer).
	qualify bool
	now     func() time.Time
	cache   *lru.Cache[string, *Claims] // nil: no cache
}

// Requirement is one of a rule's requirements (any one of them admits a
// token): a provider and, when set, the audiences that replace the
// provider's for this rule, as ESPv2 does (Envoy's ProviderWithAudiences).
type Requirement struct {
	ProviderID string
	// Audiences, normalized; nil: the provider's (or its default,
	// https://SERVICE_NAME).
	Audiences []string
}

// NewRequirement reads a requirement of the service config: audiences is
// its comma-separated `audiences` field ("" keeps the provider's).
func NewRequirement(providerID, audiences string) Requirement {
	return Requirement{ProviderID: providerID, Audiences: splitAudiences(audiences)}
}

func splitAudiences(list string) []string {
	var out []string
	for _, aud := range strings.Split(list, ",") {
		if aud = strings.TrimSpace(aud); aud != "" {
			out = append(out, normalizeAudience(aud))
		}
	}
	return out
}

// Claims is a verified token.
type Claims struct {
	Provider string
	Subject  string
	Email    string
	Issuer   string
	// Owner names the caller to the backend (X-Endpoint-API-Owner): the
	// subject, else the email; prefixed with "ISSUER#" when more than one
	// issuer is configured. "" when the token has neither.
	Owner string
	// Audience is the token's aud, normalized.
	Audience []string
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
	if opts.TokenCacheSize == 0 {
		opts.TokenCacheSize = DefaultTokenCacheSize
	}
	v := &Verifier{providers: map[string]*Provider{}, now: opts.Now}
	if opts.TokenCacheSize > 0 {
		v.cache, _ = lru.New[string, *Claims](opts.TokenCacheSize) // fails only for a size <= 0
	}
	issuers := map[string]bool{}
	for i, p := range a.GetProviders() {
		pr := &Provider{ID: p.GetId(), Issuer: p.GetIssuer(), Audiences: splitAudiences(p.GetAudiences())}
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
		issuers[pr.Issuer] = true
	}
	v.qualify = len(issuers) > 1
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

// audiences are the ones a requirement accepts.
func (r *Requirement) audiences(p *Provider) []string {
	if r.Audiences != nil {
		return r.Audiences
	}
	return p.Audiences
}

// Verify checks raw against a rule's requirements: signature by the
// issuer's keys, exp/nbf/iat, and audience. Every requirement whose
// provider has the token's issuer is tried (providers may share an
// issuer, with other keys or audiences); the first that accepts the token
// wins. An issuer that none of them has is 401; an audience not allowed
// is 403. Under WithoutFetch it returns ErrWouldBlock when no provider
// accepts the token with the keys at hand and one needs keys fetched.
func (v *Verifier) Verify(ctx context.Context, raw string, reqs []Requirement) (*Claims, error) {
	now := v.now()
	// A token verified before costs one map lookup: parsing it (base64 and
	// two JSON documents) would cost more than all the rest of a proxied call.
	if c := v.cached(raw, now); c != nil && v.admits(reqs, c) {
		return c, nil
	}
	tok, err := jwt.ParseSigned(raw, allowedAlgs)
	if err != nil {
		if _, ok := errors.AsType[*jose.ErrUnexpectedSignatureAlgorithm](err); ok {
			return nil, unauthenticated("bad_algorithm", "Jwt verification fails: the token's signature algorithm is not allowed (asymmetric algorithms only)")
		}
		return nil, unauthenticated("malformed", "Jwt is not in the form of Header.Payload.Signature")
	}
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, unauthenticated("malformed", "Jwt payload is not a JSON object with standard claims")
	}
	var best *Error
	blocked := false
	for i := range reqs {
		p := v.providers[reqs[i].ProviderID]
		if p == nil || p.Issuer != unverified.Issuer || seenBefore(reqs[:i], p.ID, reqs[i].Audiences) {
			continue
		}
		claims, err := v.verifyWith(ctx, p, tok, raw, now)
		if err == nil && !audienceAllowed(claims.Audience, reqs[i].audiences(p)) {
			err = &Error{HTTPStatus: http.StatusForbidden, Code: codes.PermissionDenied, Reason: "audience",
				Message: "Audiences in Jwt are not allowed"}
		}
		if err == nil {
			if claims.Owner, err = v.owner(claims.Issuer, claims.Subject, claims.Email); err != nil {
				return nil, err
			}
			v.remember(raw, claims)
			return claims, nil
		}
		var e *Error
		switch {
		case errors.Is(err, ErrWouldBlock):
			blocked = true
		case errors.As(err, &e):
			if best == nil || rank(e) > rank(best) {
				best = e
			}
		default:
			return nil, err
		}
	}
	switch {
	case blocked:
		return nil, ErrWouldBlock
	case best != nil:
		return nil, best
	}
	return nil, unauthenticated("unknown_issuer", "Jwt issuer is not configured")
}

// seenBefore reports whether an earlier requirement already tried this
// provider with these audiences.
func seenBefore(earlier []Requirement, id string, aud []string) bool {
	for _, r := range earlier {
		if r.ProviderID == id && slicesEqual(r.Audiences, aud) {
			return true
		}
	}
	return false
}

func slicesEqual(a, b []string) bool {
	if (a == nil) != (b == nil) || len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// rank orders refusals by how far the token got, so that when several
// providers refuse it the answer names the furthest check: the keys of a
// provider sharing the issuer not matching says less than the audience
// of the one whose keys did.
func rank(e *Error) int {
	switch e.Reason {
	case "jwks_unavailable":
		return 0
	case "unknown_kid":
		return 1
	case "bad_signature":
		return 2
	case "audience":
		return 4
	}
	return 3 // time and claim checks, after the signature
}

// admits reports whether a cached token passes one of reqs.
func (v *Verifier) admits(reqs []Requirement, c *Claims) bool {
	for i := range reqs {
		if reqs[i].ProviderID != c.Provider {
			continue
		}
		if p := v.providers[c.Provider]; p != nil && audienceAllowed(c.Audience, reqs[i].audiences(p)) {
			return true
		}
	}
	return false
}

// verifyWith checks the token with one provider's keys, and its times;
// the caller checks the audience and names the owner.
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
		return nil, unauthenticated("unknown_kid", "Jwt verification fails: no key with kid %q for issuer %s", Clip(kid), p.Issuer)
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
	aud := make([]string, len(std.Audience))
	for i, a := range std.Audience {
		aud[i] = normalizeAudience(a)
	}
	payload := strings.Split(raw, ".")[1]
	return &Claims{Provider: p.ID, Subject: std.Subject, Email: extra.Email, Issuer: std.Issuer, Audience: aud,
		UserInfo: strings.TrimRight(payload, "="), Expiry: std.Expiry.Time()}, nil
}

// owner names the caller: the subject, else the email, as the scheduler
// always did; with more than one issuer configured, ISSUER#NAME, the form
// Kubernetes gives OIDC usernames from claims other than email, since two
// issuers may give one subject to two people.
func (v *Verifier) owner(issuer, sub, email string) (string, error) {
	name := sub
	if name == "" {
		name = email
	}
	if name == "" {
		return "", nil
	}
	if v.qualify {
		name = issuer + "#" + name
	}
	if err := ValidOwner(name); err != nil {
		return "", unauthenticated("bad_owner", "Jwt subject is not usable as an owner name: %v", err)
	}
	return name, nil
}

// ValidOwner checks an owner name: 1 to MaxOwnerLen visible ASCII
// characters, so that it travels as a header value unchanged.
func ValidOwner(name string) error {
	if name == "" || len(name) > MaxOwnerLen {
		return fmt.Errorf("%d bytes; want 1 to %d", len(name), MaxOwnerLen)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("byte %d is %#x; want visible ASCII (0x21-0x7e)", i, c)
		}
	}
	return nil
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

// audienceAllowed: got holds normalized audiences.
func audienceAllowed(got []string, allowed []string) bool {
	for _, g := range got {
		for _, a := range allowed {
			if g == a {
				return true
			}
		}
	}
	return false
}

// cached returns a verified token that has not expired.
func (v *Verifier) cached(raw string, now time.Time) *Claims {
	if v.cache == nil {
		return nil
	}
	c, ok := v.cache.Get(raw)
	if !ok {
		return nil
	}
	if !now.Before(c.Expiry.Add(ClockSkew)) {
		v.cache.Remove(raw)
		return nil
	}
	return c
}

// remember caches a verified token, so that its signature (about 30 µs
// for RS256) is checked once per token, not per call. When full, the
// least recently used token goes: O(1) per insert.
func (v *Verifier) remember(raw string, c *Claims) {
	if v.cache != nil {
		v.cache.Add(raw, c)
	}
}

// DecodeUserInfo returns the JSON payload of an X-Endpoint-API-UserInfo value.
func DecodeUserInfo(v string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(v) }

// HashKey is how API keys are stored: hex SHA-256.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return fmt.Sprintf("%x", sum)
}
