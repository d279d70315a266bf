package auth

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// ErrWouldBlock is what Verify returns under WithoutFetch when the token
// needs keys that must be fetched first.
var ErrWouldBlock = errors.New("auth: verifying needs a JWKS fetch")

type noFetchKey struct{}

// WithoutFetch marks ctx so that Verify never waits for the network: it
// verifies with the keys at hand or returns ErrWouldBlock. Callers on a
// connection's goroutine try this first and verify in a goroutine of
// their own only when it says so.
func WithoutFetch(ctx context.Context) context.Context {
	return context.WithValue(ctx, noFetchKey{}, true)
}

func noFetch(ctx context.Context) bool { return ctx.Value(noFetchKey{}) != nil }

// keySet fetches and caches one provider's signing keys. It serves the
// last good keys when the issuer is down, and refetches early (rate
// limited) when a token names a key id it does not know.
type keySet struct {
	uri      string // JWKS URI; empty means OpenID discovery from issuer
	issuer   string
	client   *http.Client
	ttl      time.Duration
	minRetry time.Duration
	now      func() time.Time
	onFetch  func(provider string, ok bool)
	provider string

	mu        sync.Mutex
	keys      []jose.JSONWebKey
	fetched   time.Time // last successful fetch
	attempted time.Time // last attempt, successful or not
	lastErr   error
	fetching  chan struct{} // non-nil while a fetch runs; closed when done
}

// get returns the keys, fetching them when stale. forceKid asks for a
// refetch (rate limited) because a token named an unknown key.
func (k *keySet) get(ctx context.Context, refresh bool) ([]jose.JSONWebKey, error) {
	for {
		k.mu.Lock()
		now := k.now()
		fresh := k.keys != nil && now.Sub(k.fetched) < k.ttl
		mayRetry := now.Sub(k.attempted) >= k.minRetry
		if (fresh && !refresh) || (!mayRetry && k.keys != nil) || (!mayRetry && k.lastErr != nil && k.keys == nil) {
			keys, err := k.keys, k.lastErr
			k.mu.Unlock()
			if keys == nil {
				return nil, err
			}
			return keys, nil
		}
		if noFetch(ctx) {
			k.mu.Unlock()
			return nil, ErrWouldBlock
		}
		if wait := k.fetching; wait != nil {
			k.mu.Unlock()
			select {
			case <-wait:
				refresh = false // someone just fetched
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		done := make(chan struct{})
		k.fetching = done
		k.attempted = now
		k.mu.Unlock()

		// The fetch outlives the request that asked for it: one caller
		// giving up must not fail (or poison) the fetch for everyone.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		keys, err := k.fetch(fctx)
		cancel()
		k.mu.Lock()
		k.fetching = nil
		close(done)
		if err == nil {
			k.keys, k.fetched, k.lastErr = keys, k.now(), nil
		} else {
			k.lastErr = err
		}
		cached := k.keys
		k.mu.Unlock()
		if k.onFetch != nil {
			k.onFetch(k.provider, err == nil)
		}
		if cached != nil {
			return cached, nil // last good keys when the issuer is down
		}
		return nil, err
	}
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	uri := k.uri
	if uri == "" {
		var err error
		if uri, err = k.discover(ctx); err != nil {
			return nil, err
		}
	}
	body, err := k.getJSON(ctx, uri)
	if err != nil {
		return nil, err
	}
	return ParseJWKS(body)
}

// discover reads jwks_uri from the issuer's OpenID configuration.
func (k *keySet) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(k.issuer, "/") + "/.well-known/openid-configuration"
	body, err := k.getJSON(ctx, u)
	if err != nil {
		return "", fmt.Errorf("OpenID discovery: %w", err)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.JWKSURI == "" {
		return "", fmt.Errorf("OpenID discovery at %s: no jwks_uri", u)
	}
	return doc.JWKSURI, nil
}

func (k *keySet) getJSON(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: HTTP %d", u, resp.StatusCode)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// ParseJWKS accepts a JWK Set ({"keys": […]}) or Google's x509 map
// ({kid: PEM certificate}), chosen as ESP does: the map when there is no
// "keys" field and every value is a string.
func ParseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON object: %w", err)
	}
	if _, ok := probe["keys"]; ok {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(body, &set); err != nil {
			return nil, fmt.Errorf("JWK Set: %w", err)
		}
		var keys []jose.JSONWebKey
		for _, key := range set.Keys {
			if key.IsPublic() && key.Valid() {
				keys = append(keys, key)
			}
		}
		if len(keys) == 0 {
			return nil, errors.New("JWK Set has no usable public keys")
		}
		return keys, nil
	}
	var certs map[string]string
	if err := json.Unmarshal(body, &certs); err != nil || len(certs) == 0 {
		return nil, errors.New(`JWKS is neither a JWK Set ({"keys": […]}) nor an x509 map ({kid: PEM})`)
	}
	var keys []jose.JSONWebKey
	for kid, p := range certs {
		block, _ := pem.Decode([]byte(p))
		if block == nil {
			return nil, fmt.Errorf("x509 JWKS: key %q is not PEM", kid)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("x509 JWKS: key %q: %w", kid, err)
		}
		keys = append(keys, jose.JSONWebKey{Key: cert.PublicKey, KeyID: kid, Certificates: []*x509.Certificate{cert}})
	}
	return keys, nil
}
