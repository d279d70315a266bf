package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testservice"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// epGateway is a gateway in front of the interop TestService (which
// answers, in response headers, what it saw of each call) and a health
// service, with two JWT issuers, so that every entry point can be driven
// with the same calls and compared.
type epGateway struct {
	t      *testing.T
	g      *Gateway
	a, b   *issuer // two issuers: owners are ISSUER#SUB
	health *health.Server
	roots  *tls.Config
	ssl    string
}

// epConfig is the service config of the entry-point tests.
func epConfig(a, b *issuer, extra string) string {
	return `type: google.api.Service
name: test.example.com
apis: [{name: grpc.testing.TestService}, {name: grpc.health.v1.Health}]
usage:
  rules:
  - {selector: "*", allow_unregistered_calls: false}
  - {selector: grpc.health.v1.Health.Check, allow_unregistered_calls: true}
authentication:
  providers:
  - {id: a, issuer: "` + a.url() + `", jwks_uri: "` + a.url() + `/jwks"}
  - {id: b, issuer: "` + b.url() + `", jwks_uri: "` + b.url() + `/jwks"}
  rules:
  - {selector: "*", requirements: [{provider_id: a}, {provider_id: b}]}
  - {selector: grpc.health.v1.Health.Check, allow_without_credential: true}
  - {selector: grpc.testing.TestService.EmptyCall, requirements: [{provider_id: a, audiences: "scheduler"}]}
http:
  rules:
  - {selector: grpc.testing.TestService.UnaryCall, post: /v1/unary, body: "*"}
  - {selector: grpc.testing.TestService.EmptyCall, post: /v1/empty, body: "*"}
  - {selector: grpc.health.v1.Health.Check, get: /v1/health}
` + extra
}

func newEPGateway(t *testing.T, extra string, opts ...gwOpt) *epGateway {
	t.Helper()
	a, b := newIssuer(t), newIssuer(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, &testservice.Service{})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	cfg := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(cfg, []byte(epConfig(a, b, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, roots := testcert.Dir(t)
	o := Options{ServiceConfig: cfg, Backend: "grpc://" + ln.Addr().String(), Descriptor: descriptorSet(t),
		SSLAddr: "127.0.0.1:0", CertDir: dir, Log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	g, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = g.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &epGateway{t: t, g: g, a: a, b: b, health: hs, roots: &tls.Config{RootCAs: roots}, ssl: g.Addr("ssl")}
}

// epCall is one call, as each entry point carries it.
type epCall struct {
	method  string        // gRPC path, e.g. /grpc.testing.TestService/UnaryCall
	msg     proto.Message // the request (native gRPC and gRPC-Web)
	rest    string        // "POST /v1/unary"; "" uses the gRPC path (not routed)
	json    string        // the REST body
	token   string        // bearer token; "" for none
	headers []string      // more request headers, name/value pairs
}

// epResult is what a client saw, in the terms of its protocol.
type epResult struct {
	code    codes.Code  // gRPC status (REST: the JSON body's "status")
	status  int         // HTTP status (REST only; 200 for the others)
	msg     string      // status message
	header  http.Header // response headers
	trailer http.Header // response trailers (native gRPC)
	entry   string      // the entry point's name
	reply   []byte      // the first response message (gRPC, gRPC-Web), or the REST body
}

// is reports whether a result is code, answered as HTTP status rest on
// the REST entry point and as HTTP 200 on the others (gRPC carries its
// status in the trailers).
func (r epResult) is(entry string, code codes.Code, rest int) bool {
	if entry != "rest" {
		rest = http.StatusOK
	}
	return r.code == code && r.status == rest
}

// entryPoints are the four ways a call enters the gateway.
var entryPoints = []struct {
	name string
	call func(*epGateway, epCall) epResult
}{
	{"relay", (*epGateway).viaRelay},
	{"grpc-go", (*epGateway).viaGRPCGo},
	{"rest", (*epGateway).viaREST},
	{"grpc-web", (*epGateway).viaGRPCWeb},
}

func (e *epGateway) client() *http.Client {
	tr := &http.Transport{TLSClientConfig: e.roots.Clone(), ForceAttemptHTTP2: true}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func (e *epGateway) request(method, path string, body []byte, c epCall, hdr ...string) *http.Request {
	e.t.Helper()
	req, err := http.NewRequest(method, "https://"+e.ssl+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(c.headers); i += 2 {
		req.Header.Add(c.headers[i], c.headers[i+1])
	}
	return req
}

func grpcFrame(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// nativeGRPC sends one native gRPC call on cl and reads status from the
// trailers (or the headers of a trailers-only answer).
func (e *epGateway) nativeGRPC(cl *http.Client, c epCall, trace *httptrace.ClientTrace) epResult {
	e.t.Helper()
	req := e.request("POST", c.method, grpcFrame(e.t, c.msg), c, "Content-Type", "application/grpc", "Te", "trailers")
	if trace != nil {
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	}
	resp, err := cl.Do(req)
	if err != nil {
		e.t.Fatalf("gRPC %s: %v", c.method, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := epResult{status: resp.StatusCode, header: resp.Header, trailer: resp.Trailer}
	st, msg := resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if st == "" {
		st, msg = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	r.code, r.msg = parseCode(e.t, st), unescape(msg)
	if len(body) >= 5 {
		r.reply = body[5 : 5+binary.BigEndian.Uint32(body[1:5])]
	}
	return r
}

// viaRelay: a connection whose first request is native gRPC goes to the
// frame relay.
func (e *epGateway) viaRelay(c epCall) epResult {
	return e.nativeGRPC(e.client(), c, nil)
}

// viaGRPCGo: native gRPC on a connection whose first request was REST is
// served by grpc-go inside net/http.
func (e *epGateway) viaGRPCGo(c epCall) epResult {
	e.t.Helper()
	cl := e.client()
	first, err := cl.Get("https://" + e.ssl + "/v1/health")
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, first.Body)
	first.Body.Close()
	reused := false
	r := e.nativeGRPC(cl, c, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	if !reused {
		e.t.Fatal("the gRPC call did not share the REST call's connection: it did not reach grpc-go")
	}
	return r
}

func (e *epGateway) viaREST(c epCall) epResult {
	e.t.Helper()
	method, path, ok := strings.Cut(c.rest, " ")
	if !ok {
		method, path = "POST", c.method
	}
	var hdr []string
	if c.json != "" {
		hdr = []string{"Content-Type", "application/json"}
	}
	resp, err := e.client().Do(e.request(method, path, []byte(c.json), c, hdr...))
	if err != nil {
		e.t.Fatalf("REST %s: %v", c.rest, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := epResult{status: resp.StatusCode, header: resp.Header, reply: body}
	if resp.StatusCode != http.StatusOK {
		var eb struct {
			Message string     `json:"message"`
			Status  codes.Code `json:"status"`
		}
		if err := json.Unmarshal(body, &eb); err != nil {
			e.t.Fatalf("REST %s: %d with body %q: %v", c.rest, resp.StatusCode, body, err)
		}
		r.code, r.msg = eb.Status, eb.Message
	}
	return r
}

func (e *epGateway) viaGRPCWeb(c epCall) epResult {
	e.t.Helper()
	req := e.request("POST", c.method, grpcFrame(e.t, c.msg), c, "Content-Type", "application/grpc-web+proto", "X-Grpc-Web", "1")
	resp, err := e.client().Do(req)
	if err != nil {
		e.t.Fatalf("gRPC-Web %s: %v", c.method, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	r := epResult{status: resp.StatusCode, header: resp.Header}
	if st := resp.Header.Get("Grpc-Status"); st != "" {
		r.code, r.msg = parseCode(e.t, st), unescape(resp.Header.Get("Grpc-Message"))
		return r
	}
	frames, err := parseFramesWithTrailer(body)
	if err != nil {
		e.t.Fatalf("gRPC-Web %s: %v", c.method, err)
	}
	if len(frames.data) > 0 {
		r.reply = frames.data[0]
	}
	for _, line := range strings.Split(frames.trailer, "\r\n") {
		k, v, _ := strings.Cut(line, ": ")
		switch strings.ToLower(k) {
		case "grpc-status":
			r.code = parseCode(e.t, v)
		case "grpc-message":
			r.msg = unescape(v)
		}
	}
	return r
}

func parseCode(t *testing.T, s string) codes.Code {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("grpc-status %q: %v", s, err)
	}
	return codes.Code(n)
}

func unescape(s string) string {
	// grpc-message is percent-encoded (gRPC's PROTOCOL-HTTP2).
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unary is a call of TestService.UnaryCall with a token.
func unary(tok string, hdr ...string) epCall {
	return epCall{method: "/grpc.testing.TestService/UnaryCall", msg: &testpb.SimpleRequest{}, rest: "POST /v1/unary", json: "{}",
		token: tok, headers: hdr}
}

// The gateway names the owner in X-Endpoint-API-Owner on every entry
// point (ISSUER#SUB here: two issuers are configured) and a client's own
// copy never reaches the backend, nor any other X-Endpoint-* header.
func TestOwnerHeaderOnEveryEntryPoint(t *testing.T) {
	e := newEPGateway(t, "")
	for _, ep := range entryPoints {
		for _, c := range []struct {
			is    *issuer
			owner string
		}{{e.a, e.a.url() + "#alice"}, {e.b, e.b.url() + "#alice"}} {
			r := ep.call(e, unary(c.is.token(t, "alice"), "X-Endpoint-API-Owner", "mallory", "x-endpoint-api-owner", "eve",
				"X-Endpoint-API-UserInfo", "spoof", "X-Endpoint-Other", "spoof"))
			if r.code != codes.OK {
				t.Fatalf("%s: %v %q", ep.name, r.code, r.msg)
			}
			if got := r.header.Values("seen-owner"); len(got) != 1 || got[0] != c.owner {
				t.Errorf("%s: backend saw X-Endpoint-API-Owner %q; want exactly %q", ep.name, got, c.owner)
			}
			if ui := r.header.Get("seen-userinfo"); ui == "" || strings.Contains(ui, "spoof") {
				t.Errorf("%s: backend saw X-Endpoint-API-UserInfo %q; want only the verified payload", ep.name, ui)
			}
			if o := r.header.Get("seen-other"); o != "" {
				t.Errorf("%s: backend saw X-Endpoint-Other %q", ep.name, o)
			}
		}
	}
}

// epQuota meters UnaryCall: 3 a minute per consumer.
const epQuota = `metrics:
- {name: unary-calls, metric_kind: DELTA, value_type: INT64}
quota:
  limits:
  - {name: unary-per-minute, metric: unary-calls, unit: "1/min/{project}", values: {STANDARD: 3}}
  metric_rules:
  - {selector: grpc.testing.TestService.UnaryCall, metric_costs: {unary-calls: 1}}
`

// One admission path: the same calls through the four entry points get
// the same answers (each in its protocol's terms). Regression: gRPC-Web
// did not answer NOT_SERVING while draining.
func TestEveryEntryPointDecidesAlike(t *testing.T) {
	e := newEPGateway(t, epQuota)
	healthCall := epCall{method: "/grpc.health.v1.Health/Check", msg: &healthpb.HealthCheckRequest{}, rest: "GET /v1/health"}
	serving, _ := proto.Marshal(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
	now := time.Now()
	cases := []struct {
		name string
		// call is made fresh for each entry point: sub names a consumer of
		// its own, so that quotas do not carry over between entry points.
		call     func(ep string) epCall
		before   func() // and undone after
		code     codes.Code
		rest     int        // REST's HTTP status
		restCode codes.Code // REST's status where it differs from code
		check    func(r epResult) string
	}{
		{name: "no credentials", call: func(string) epCall { return unary("") }, code: codes.Unauthenticated, rest: 401,
			check: msgIs("Jwt is missing")},
		{name: "expired token", call: func(ep string) epCall {
			return unary(e.a.token(t, "x-"+ep, withTimes(now.Add(-2*time.Hour), now.Add(-3*time.Hour))))
		}, code: codes.Unauthenticated, rest: 401, check: msgIs("Jwt is expired")},
		{name: "unknown issuer", call: func(ep string) epCall { return unary(e.a.token(t, "i-"+ep, withIssuer("https://evil.example"))) },
			code: codes.Unauthenticated, rest: 401, check: msgIs("Jwt issuer is not configured")},
		{name: "wrong audience", call: func(ep string) epCall { return unary(e.b.token(t, "w-"+ep, withAud("elsewhere"))) },
			code: codes.PermissionDenied, rest: 403, check: msgIs("Audiences in Jwt are not allowed")},
		{name: "tampered token", call: func(ep string) epCall { return unary(tamper(e.a.token(t, "alice"))) },
			code: codes.Unauthenticated, rest: 401, check: msgIs("signature does not match")},
		{name: "valid token, spoofed identity headers", call: func(ep string) epCall {
			return unary(e.b.token(t, "v-"+ep), "X-Endpoint-API-UserInfo", "spoof", "X-Endpoint-API-Owner", "root", "X-Endpoint-Other", "x")
		}, code: codes.OK, rest: 200, check: func(r epResult) string {
			if o := r.header.Values("Seen-Owner"); len(o) != 1 || !strings.HasSuffix(o[0], "#v-"+r.entry) {
				return "backend saw owner " + strings.Join(o, ",")
			}
			if ui := r.header.Get("Seen-Userinfo"); ui == "" || ui == "spoof" || r.header.Get("Seen-Other") != "" {
				return "backend saw a client's X-Endpoint-* header"
			}
			return ""
		}},
		{name: "over quota", call: func(ep string) epCall {
			tok := e.a.token(t, "q-"+ep)
			for i := range 3 {
				if r := entryPoint(ep)(e, unary(tok)); r.code != codes.OK {
					t.Fatalf("%s: call %d within quota: %v %q", ep, i, r.code, r.msg)
				}
			}
			return unary(tok)
		}, code: codes.ResourceExhausted, rest: 429, check: func(r epResult) string {
			if !strings.Contains(r.msg, "unary-per-minute") {
				return "message does not name the limit"
			}
			if r.header.Get("Retry-After") == "" && r.trailer.Get("Retry-After") == "" {
				return "no Retry-After"
			}
			return ""
		}},
		{name: "health check", call: func(string) epCall { return healthCall }, code: codes.OK, rest: 200, check: func(r epResult) string {
			if r.entry != "rest" && !bytes.Equal(r.reply, serving) || r.entry == "rest" && !strings.Contains(string(r.reply), `"SERVING"`) {
				return "not SERVING: " + string(r.reply)
			}
			return ""
		}},
		{name: "health check while draining", call: func(string) epCall { return healthCall },
			before: func() { e.g.draining.Store(true) },
			code:   codes.OK, rest: 503, restCode: codes.Unavailable, check: func(r epResult) string {
				if r.entry != "rest" && !bytes.Equal(r.reply, notServing) {
					return "answer is not NOT_SERVING"
				}
				return ""
			}},
		{name: "unknown method of an exposed service (the backend answers)", call: func(ep string) epCall {
			return epCall{method: "/grpc.testing.TestService/Nope", msg: &testpb.Empty{}, token: e.a.token(t, "u-"+ep)}
		}, code: codes.Unimplemented, rest: 404, restCode: codes.NotFound},
		{name: "service not in apis", call: func(ep string) epCall {
			return epCall{method: "/grpc.testing.UnimplementedService/UnimplementedCall", msg: &testpb.Empty{}, token: e.a.token(t, "n-"+ep)}
		}, code: codes.Unimplemented, rest: 404, restCode: codes.NotFound, check: msgIs(msgNotDefined)},
	}
	for _, c := range cases {
		for _, ep := range entryPoints {
			if c.before != nil {
				c.before()
			}
			r := ep.call(e, c.call(ep.name))
			e.g.draining.Store(false)
			r.entry = ep.name
			want := c.code
			if ep.name == "rest" && c.restCode != codes.OK {
				want = c.restCode
			}
			if !r.is(ep.name, want, c.rest) {
				t.Errorf("%s via %s: %v (HTTP %d) %q; want %v (REST: HTTP %d)", c.name, ep.name, r.code, r.status, r.msg, want, c.rest)
				continue
			}
			if c.check != nil {
				if why := c.check(r); why != "" {
					t.Errorf("%s via %s: %s", c.name, ep.name, why)
				}
			}
		}
	}
}

func msgIs(want string) func(epResult) string {
	return func(r epResult) string {
		if !strings.Contains(r.msg, want) {
			return "message " + strconv.Quote(r.msg) + ", want " + strconv.Quote(want)
		}
		return ""
	}
}

func entryPoint(name string) func(*epGateway, epCall) epResult {
	for _, ep := range entryPoints {
		if ep.name == name {
			return ep.call
		}
	}
	panic("no entry point " + name)
}
