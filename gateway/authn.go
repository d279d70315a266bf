package gateway

import (
	"context"
	"net/http"
	"strings"

	"github.com/meridian-gw/meridian/gateway/auth"
	"google.golang.org/grpc/codes"
)

// Headers the backend receives, set only by the gateway: any copy a
// client sent is removed (every X-Endpoint-* header is).
const (
	// UserInfoHeader carries the verified JWT payload (ESPv2's format).
	UserInfoHeader = "X-Endpoint-API-UserInfo"
	// OwnerHeader names the verified caller: the JWT's sub (else email),
	// as ISSUER#SUB when more than one issuer is configured (see
	// auth.Claims.Owner). Sent with UserInfoHeader; empty when the token
	// has neither sub nor email.
	OwnerHeader = "X-Endpoint-API-Owner"
)

// Messages users of ESP know; scripts and docs match them.
const (
	msgNotDefined   = "The current request is not defined by this API."
	msgUnregistered = "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."
	msgJwtMissing   = "Jwt is missing"
	msgBadAPIKey    = "API key not valid. Please pass a valid API key."
)

// credSource is where a request's credentials come from: headers (or gRPC
// metadata) and, for REST, the query string.
type credSource interface {
	header(name string) string
	query(name string) string
}

// identity is who a request proved to be.
type identity struct {
	claims   *auth.Claims // nil: no JWT
	consumer string       // API key consumer, or "" for none
}

// quotaKey is whom quota is charged to: the API key's consumer, else the
// JWT subject, else everyone without identity together.
func (id identity) quotaKey() string {
	switch {
	case id.consumer != "":
		return "key:" + id.consumer
	case id.claims != nil:
		return "jwt:" + id.claims.Issuer + "/" + id.claims.Subject
	}
	return "anonymous"
}

// authenticate applies a method's policy to a request's credentials.
func (s *state) authenticate(ctx context.Context, p *policy, c credSource) (identity, error) {
	var id identity
	if len(p.requirements) > 0 {
		tok := s.findToken(p, c)
		switch {
		case tok != "":
			claims, err := s.verifier.Verify(ctx, tok, p.requirements)
			if err != nil {
				return identity{}, err
			}
			id.claims = claims
		case !p.allowWithoutCredential:
			return identity{}, &auth.Error{HTTPStatus: http.StatusUnauthorized, Code: codes.Unauthenticated, Reason: "missing", Message: msgJwtMissing}
		}
	}
	if key := apiKey(c); key != "" {
		consumer, ok := s.apiKeys.Consumer(key)
		if !ok {
			return identity{}, &auth.Error{HTTPStatus: http.StatusBadRequest, Code: codes.InvalidArgument, Reason: "bad_api_key", Message: msgBadAPIKey}
		}
		id.consumer = consumer
	}
	if !p.allowUnregistered && id.claims == nil && id.consumer == "" {
		return identity{}, &auth.Error{HTTPStatus: http.StatusUnauthorized, Code: codes.Unauthenticated, Reason: "unregistered", Message: msgUnregistered}
	}
	return id, nil
}

// findToken looks where the method's providers say a token may be.
func (s *state) findToken(p *policy, c credSource) string {
	for _, r := range p.requirements {
		pr, ok := s.verifier.Provider(r.ProviderID)
		if !ok {
			continue
		}
		for _, l := range pr.Locations {
			var v string
			if l.Header != "" {
				v = c.header(l.Header)
			} else {
				v = c.query(l.Query)
			}
			if v == "" {
				continue
			}
			if l.ValuePrefix != "" {
				// Scheme names are case-insensitive ("bearer" works too).
				if len(v) < len(l.ValuePrefix) || !strings.EqualFold(v[:len(l.ValuePrefix)], l.ValuePrefix) {
					continue
				}
				v = v[len(l.ValuePrefix):]
			}
			if v = strings.TrimSpace(v); v != "" {
				return v
			}
		}
	}
	return ""
}

func apiKey(c credSource) string {
	if k := c.query("key"); k != "" {
		return k
	}
	if k := c.query("api_key"); k != "" {
		return k
	}
	return c.header("X-Api-Key")
}
