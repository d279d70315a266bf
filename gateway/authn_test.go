package gateway

import (
	"os"
	"strings"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func empty(tok string) epCall {
	return epCall{method: "/grpc.testing.TestService/EmptyCall", msg: &testpb.Empty{}, rest: "POST /v1/empty", json: "{}", token: tok}
}

// Regression: a requirement's audiences were ignored, so a token minted
// for another audience passed a rule that says `audiences: scheduler`.
// They replace the provider's audiences (and the https://SERVICE_NAME
// default) for that rule, as in ESPv2; on every entry point.
func TestRequirementAudiencesRestrictTheRule(t *testing.T) {
	e := newEPGateway(t, "")
	for _, ep := range entryPoints {
		for _, c := range []struct {
			name string
			tok  string
			code codes.Code
			http int
		}{
			{"the service's own audience", e.a.token(t, "alice"), codes.PermissionDenied, 403},
			{"another audience", e.a.token(t, "alice", withAud("batch-jobs")), codes.PermissionDenied, 403},
			{"the rule's audience", e.a.token(t, "alice", withAud("https://scheduler")), codes.OK, 200},
			{"the rule's audience, other provider", e.b.token(t, "alice", withAud("scheduler")), codes.Unauthenticated, 401},
		} {
			r := ep.call(e, empty(c.tok))
			if !r.is(ep.name, c.code, c.http) {
				t.Errorf("%s, %s: %v (HTTP %d) %q; want %v (HTTP %d)", ep.name, c.name, r.code, r.status, r.msg, c.code, c.http)
			}
		}
		// The rule of other methods keeps the provider's audiences.
		if r := ep.call(e, unary(e.a.token(t, "alice", withAud("https://scheduler")))); r.code != codes.PermissionDenied {
			t.Errorf("%s: a token for the scheduler audience on a method without that rule: %v %q", ep.name, r.code, r.msg)
		}
	}
}

// Regression: of two providers with one issuer (say, keys being rotated
// to a second JWKS, or a second audience), only the last was tried: valid
// tokens of the first got a false 401 or 403.
func TestProvidersSharingAnIssuerAreAllTried(t *testing.T) {
	rotated := newIssuer(t) // other keys, same issuer name
	var iss string
	h := newGW(t, func(o *Options) {
		b, _ := os.ReadFile(o.ServiceConfig)
		s := string(b)
		iss = s[strings.Index(s, "issuer: ")+len("issuer: "):]
		iss = iss[:strings.IndexByte(iss, '\n')]
		s = strings.Replace(s, "  rules:\n  - selector: \"*\"\n    requirements:\n      - provider_id: customer\n",
			"  - id: rotated\n    issuer: "+iss+"\n    jwks_uri: "+rotated.url()+"/jwks\n    audiences: notebooks\n"+
				"  rules:\n  - selector: \"*\"\n    requirements:\n      - provider_id: customer\n      - provider_id: rotated\n", 1)
		if err := os.WriteFile(o.ServiceConfig, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	for _, c := range []struct {
		name, tok string
		code      int
	}{
		{"first provider's keys and audience", h.is.token(t, "alice"), 200},
		{"second provider's keys and audience", rotated.token(t, "alice", withIssuer(iss), withAud("notebooks")), 200},
		{"second provider's keys, first one's audience", rotated.token(t, "alice", withIssuer(iss)), 403},
	} {
		if r := h.do(h.h1, "GET", h.tls("/v1/quota"), c.tok, ""); r.code != c.code {
			t.Errorf("%s: %d %s; want %d", c.name, r.code, r.body, c.code)
		}
	}
}

// Regression: the scheduler named owners by sub alone, so with two
// issuers two different "alice"s were one owner and saw each other's
// sessions. The gateway, which knows the issuers, names them ISSUER#SUB.
func TestTwoIssuersAliceAreTwoOwners(t *testing.T) {
	other := newIssuer(t)
	h := newGW(t, func(o *Options) {
		b, _ := os.ReadFile(o.ServiceConfig)
		s := strings.Replace(string(b), "  rules:\n  - selector: \"*\"\n    requirements:\n      - provider_id: customer\n",
			"  - id: partner\n    issuer: "+other.url()+"\n    jwks_uri: "+other.url()+"/jwks\n"+
				"  rules:\n  - selector: \"*\"\n    requirements:\n      - provider_id: customer\n      - provider_id: partner\n", 1)
		if err := os.WriteFile(o.ServiceConfig, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	gc := h.grpcClient()
	ours, theirs := h.is.token(t, "alice"), other.token(t, "alice")
	s, err := gc.CreateSession(bearer(ours), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
	if err != nil || s.Owner != h.is.url()+"#alice" {
		t.Fatalf("our alice: owner %q, %v; want %q", s.GetOwner(), err, h.is.url()+"#alice")
	}
	if r := h.do(h.h2, "GET", h.tls("/v1/"+s.Name), theirs, ""); r.code != 404 && r.code != 403 {
		t.Fatalf("the partner's alice reads our alice's session: %d %s", r.code, r.body)
	}
	list, err := gc.ListSessions(bearer(theirs), &schedulerv1.ListSessionsRequest{})
	if err != nil || len(list.Sessions) != 0 {
		t.Fatalf("the partner's alice lists %v, %v; want none", list.GetSessions(), err)
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), ours, ""); r.code != 200 || !strings.Contains(r.body, s.Name) {
		t.Fatalf("our alice over REST: %d %s", r.code, r.body)
	}
}
